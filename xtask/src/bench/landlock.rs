//! Guarded against Landlock-only (issue 15, goal 2): `bench_loop`'s
//! connect, open and fork+exec loops under the full guard at the default
//! audit level, against the same loops under the same Landlock ruleset
//! and nothing else (no daemon, no eBPF, no mount namespace, no seccomp),
//! and bare. Target: guarded within 1.10x of Landlock-only.
//!
//! The Landlock-only runs go through [`exec_under`] (`cargo xtask`'s
//! hidden `__landlock-exec`), which builds the ruleset from the very
//! policy file the guarded runs use, the way the launch helper
//! (`mcpguard/src/launch/sandbox.rs`) does: every filesystem right of
//! Landlock ABI 6 handled, the abstract Unix socket and signal scopes, no
//! TCP rights (the guard leaves connect and bind to its eBPF layer),
//! `read` paths ReadFile+ReadDir, `exec` paths Execute on top, `write`
//! paths every write right but device nodes, file rules cut to the rights
//! a file can have, missing paths skipped. The policy says
//! `baseline = false` and lists what the runtime baseline would have
//! given the loops (`/etc`, `/proc`), so the policy file is the whole
//! ruleset for both runs; the runner refuses a policy with the baseline on.
//!
//! Each run: the loops bare and Landlock-only with no daemon loaded, then a
//! fresh daemon, the loops guarded and Landlock-only again (what the
//! daemon's machine-wide hooks alone cost).

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, ensure, Context, Result};
use landlock::{
    make_bitflags, Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use serde_json::json;

use super::{
    field, level::Level, stdout_of, syscalls::Sink, write_file, Ctx, Daemon, Row, Section, Stats,
    Target,
};

/// Issue 15, goal 2.
const TARGET_RATIO: f64 = 1.10;

/// The hidden `cargo xtask` subcommand that runs [`exec_under`].
pub const SUBCOMMAND: &str = "__landlock-exec";

/// The launch helper's target ABI (`sandbox::TARGET_ABI`).
const TARGET_ABI: ABI = ABI::V6;
const READ: BitFlags<AccessFs> = make_bitflags!(AccessFs::{ReadFile | ReadDir});
const EXEC: BitFlags<AccessFs> = make_bitflags!(AccessFs::{Execute | ReadFile | ReadDir});
const WRITE: BitFlags<AccessFs> = make_bitflags!(AccessFs::{
    WriteFile | Truncate | MakeReg | MakeDir | MakeSym | MakeFifo | MakeSock
    | RemoveFile | RemoveDir | Refer | IoctlDev
});
const FILE_RIGHTS: BitFlags<AccessFs> =
    make_bitflags!(AccessFs::{ReadFile | WriteFile | Execute | Truncate | IoctlDev});

/// Confine this process with `policy`'s Landlock ruleset (see the module
/// doc), then exec `argv`. Returns only on failure.
pub fn exec_under(policy: &Path, argv: &[String]) -> Result<()> {
    let text =
        fs::read_to_string(policy).with_context(|| format!("reading {}", policy.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", policy.display()))?;
    let files = table
        .get("filesystem")
        .and_then(toml::Value::as_table)
        .with_context(|| format!("{} has no [filesystem]", policy.display()))?;
    ensure!(
        files.get("baseline").and_then(toml::Value::as_bool) == Some(false),
        "{}: the runtime baseline is on; a Landlock-only run needs the whole ruleset in the policy (`baseline = false`)",
        policy.display()
    );
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))?
        .scope(Scope::from_all(TARGET_ABI))?
        .create()?;
    for (list, access) in [("read", READ), ("write", READ | WRITE), ("exec", EXEC)] {
        let paths = files
            .get(list)
            .and_then(toml::Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for path in paths {
            let path = Path::new(path.as_str().context("a path")?);
            ensure!(
                path.is_absolute(),
                "{list} path {} is not absolute",
                path.display()
            );
            let Ok(meta) = fs::metadata(path) else {
                continue;
            };
            let access = if meta.is_dir() {
                access
            } else {
                access & FILE_RIGHTS
            };
            ruleset = ruleset.add_rule(PathBeneath::new(PathFd::new(path)?, access))?;
        }
    }
    let status = ruleset.restrict_self()?;
    ensure!(
        status.ruleset == RulesetStatus::FullyEnforced,
        "Landlock enforced the ruleset only {:?}",
        status.ruleset
    );
    let program = argv.first().context("no command")?;
    let error = std::process::Command::new(program).args(&argv[1..]).exec();
    bail!("exec {program}: {error}")
}

/// One loop of `bench_loop`.
struct Op {
    name: &'static str,
    label: &'static str,
    n: u64,
    arg: String,
}

/// Samples (ns/op) of one loop, per variant.
#[derive(Default)]
struct Samples {
    bare: Vec<f64>,
    landlock: Vec<f64>,
    guarded: Vec<f64>,
    /// Landlock-only with the daemon loaded, not guarding it.
    landlock_loaded: Vec<f64>,
}

/// The loops' policy: `bench_loop` and the open target (the scratch
/// directory), the sink's port, the baseline off and its two entries the
/// loops need listed, the audit level where the build has one.
fn loops_policy(ctx: &Ctx, port: u16, level: &Level) -> Result<PathBuf> {
    let written = ctx.policy(
        "landlock-loops",
        &[ctx.dir.as_path()],
        &[format!("127.0.0.1:{port}")],
        &level.tail(),
    )?;
    let text = fs::read_to_string(&written)?;
    super::level::write_edited(&written, &text, |t| {
        if let Some(files) = t.get_mut("filesystem").and_then(toml::Value::as_table_mut) {
            files.insert("baseline".into(), false.into());
            if let Some(read) = files.get_mut("read").and_then(toml::Value::as_array_mut) {
                read.extend(["/etc", "/proc"].map(toml::Value::from));
            }
        }
    })
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let runs = ctx.pick(5, 1);
    let level = Level::detect(ctx)?;
    let sink = Sink::start()?;
    let file = ctx.dir.join("landlock-open-target");
    write_file(&file, "bench\n", 0o644)?;
    let ops = [
        Op {
            name: "connect",
            label: "connect()+close() to an allowed 127.0.0.1 port",
            n: ctx.pick(50_000, 3_000),
            arg: sink.port.to_string(),
        },
        Op {
            name: "open",
            label: "open()+close() of an allowed file",
            n: ctx.pick(200_000, 10_000),
            arg: file.display().to_string(),
        },
        Op {
            name: "exec",
            label: "fork+exec of /bin/true",
            n: ctx.pick(2_000, 100),
            arg: "/bin/true".into(),
        },
    ];
    let policy = loops_policy(ctx, sink.port, &level)?;
    // The runner, where the test user can execute it.
    let runner = ctx.dir.join("xtask");
    fs::copy(std::env::current_exe()?, &runner).context("copying the xtask binary")?;
    fs::set_permissions(&runner, fs::Permissions::from_mode(0o755))?;

    let loop_argv = |op: &Op| {
        [
            ctx.bench_loop.display().to_string(),
            op.name.to_string(),
            op.n.to_string(),
            op.arg.clone(),
        ]
    };
    let bare = |op: &Op| -> Result<f64> {
        let a = loop_argv(op);
        let mut cmd = ctx.user_cmd(&a[0]);
        field(&stdout_of(cmd.args(&a[1..]))?, "ns_per_op")
    };
    let landlock_only = |op: &Op| -> Result<f64> {
        let mut cmd = ctx.user_cmd(&runner);
        cmd.arg(SUBCOMMAND)
            .arg("--policy")
            .arg(&policy)
            .arg("--")
            .args(loop_argv(op));
        let out = stdout_of(&mut cmd).with_context(|| format!("Landlock-only {} loop", op.name))?;
        field(&out, "ns_per_op")
    };
    let mut samples: Vec<Samples> = ops.iter().map(|_| Samples::default()).collect();
    for run in 0..runs {
        for (op, s) in ops.iter().zip(&mut samples) {
            s.bare.push(bare(op)?);
            s.landlock.push(landlock_only(op)?);
        }
        let mut daemon = Daemon::start(ctx, &format!("landlock-{run}"))?;
        for (op, s) in ops.iter().zip(&mut samples) {
            let a = loop_argv(op);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let out = stdout_of(&mut ctx.guarded(&daemon, &policy, &a))
                .with_context(|| format!("guarded {} loop", op.name))?;
            s.guarded.push(field(&out, "ns_per_op")?);
            s.landlock_loaded.push(landlock_only(op)?);
        }
        daemon.stop()?;
        let _ = fs::remove_file(&daemon.log);
    }
    drop(sink);
    Ok(section(ctx, &level, &ops, &samples, runs))
}

fn section(ctx: &Ctx, level: &Level, ops: &[Op], samples: &[Samples], runs: usize) -> Section {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (op, s) in ops.iter().zip(samples) {
        let landlock = Stats::of(&s.landlock);
        let guarded = Row::new(
            format!("{}, guarded vs Landlock-only", op.label),
            "ns/op",
            landlock,
            Stats::of(&s.guarded),
        );
        let ratio = guarded.ratio().unwrap_or(f64::NAN);
        let loaded = Row::new(
            format!("{}, Landlock-only: daemon loaded vs not", op.label),
            "ns/op",
            landlock,
            Stats::of(&s.landlock_loaded),
        );
        targets.push(Target {
            what: format!(
                "{} loop guarded within {TARGET_RATIO:.2}x of Landlock-only",
                op.name
            ),
            measured: format!("{ratio:.2}x"),
            met: Some(ratio <= TARGET_RATIO),
            why: if ratio <= TARGET_RATIO {
                String::new()
            } else {
                why_slow(op.name, ratio, loaded.ratio().unwrap_or(f64::NAN))
            },
        });
        rows.push(guarded);
        rows.push(Row::new(
            format!("{}, Landlock-only vs bare", op.label),
            "ns/op",
            Stats::of(&s.bare),
            landlock,
        ));
        rows.push(loaded);
    }
    Section {
        key: "landlock",
        title: "Guarded vs Landlock-only",
        notes: vec![format!(
            "Loops of {} connects, {} opens and {} fork+execs, {runs} runs each in blocks: bare and Landlock-only with no daemon, then a fresh daemon and the loops guarded and Landlock-only again. Audit level of the guarded runs: {}. Landlock-only applies the guarded runs' own policy file as the launch helper would (ABI 6 filesystem rights and scopes, no TCP rights, `baseline = false` with `/etc` and `/proc` listed, so the file is the whole ruleset) and nothing else; the guarded runs add the mount namespace, the seccomp fences, the egress programs and the audit hooks. {} build of mcpguard.",
            ops[0].n,
            ops[1].n,
            ops[2].n,
            level.describe(),
            ctx.profile
        )],
        details: json!({
            "audit_level": level.json(),
            "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "samples_ns_per_op": ops.iter().zip(samples).map(|(o, s)| json!({
                "op": o.name, "n": o.n, "bare": s.bare, "landlock_only": s.landlock,
                "guarded": s.guarded, "landlock_only_daemon_loaded": s.landlock_loaded,
            })).collect::<Vec<_>>(),
        }),
        rows,
        targets,
    }
}

/// A sentence on where the time goes, from what was measured.
fn why_slow(op: &str, ratio: f64, tax: f64) -> String {
    let what = match op {
        "connect" => "each connect runs the cgroup connect4 program and writes an egress record (network decisions are recorded at every level)",
        "open" => "each open runs the openat tracepoints and, where the level records it, writes an open record",
        _ => "each fork+exec writes fork, exec and exit records (recorded at every level) and runs the open tracepoints for the loader's opens",
    };
    format!(
        "{ratio:.2}x: {what}; Landlock-only processes outside the guard ran at {tax:.2}x while the daemon was loaded, the part of the cost that is its machine-wide syscall tracepoints rather than the guard itself"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused before anything is restricted: with the baseline on, the
    /// policy file is not the whole ruleset the guarded run gets.
    #[test]
    fn the_runner_refuses_a_policy_with_the_baseline_on() {
        let dir = std::env::temp_dir().join(format!("xtask-landlock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("p.toml");
        for text in [
            "name = \"p\"\n[filesystem]\nread = [\"/usr\"]\n",
            "name = \"p\"\n[filesystem]\nbaseline = true\nread = [\"/usr\"]\n",
        ] {
            fs::write(&policy, text).unwrap();
            let error = exec_under(&policy, &["/bin/true".into()]).unwrap_err();
            assert!(
                format!("{error:#}").contains("baseline = false"),
                "{error:#}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
