//! Syscall overhead inside a guarded server: `bench_loop`'s connect, open
//! and fork+exec loops, bare (no daemon), then guarded (every layer on:
//! Landlock, egress programs, audit of every open, connect, exec, fork and
//! exit) interleaved with unguarded runs while the daemon is loaded.
//!
//! Connects go to a listener of this process on 127.0.0.1 that the policy
//! allows; it accepts and drops every connection.

use std::{
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use anyhow::{Context, Result};
use serde_json::json;

use super::{field, stdout_of, write_file, Ctx, Daemon, Row, Section, Stats, Target};

/// Accepts and drops connections until dropped.
pub(super) struct Sink {
    pub(super) port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    pub(super) fn start() -> Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        // A deep backlog: a full accept queue drops SYNs, and a dropped SYN
        // costs a one-second retransmit in the middle of a timed loop.
        // SAFETY: listen(2) again on our own bound, listening socket only
        // changes its backlog.
        unsafe { libc::listen(listener.as_raw_fd(), 4096) };
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    drop(conn);
                }
            })?;
        Ok(Sink {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Op {
    name: &'static str,
    label: &'static str,
    n: u64,
    arg: String,
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let runs = ctx.pick(5, 2);
    let sink = Sink::start()?;
    let file = ctx.dir.join("open-target");
    write_file(&file, "bench\n", 0o644)?;
    let ops = [
        Op {
            name: "connect",
            label: "connect()+close() to allowed 127.0.0.1 port",
            n: ctx.pick(50_000, 5_000),
            arg: sink.port.to_string(),
        },
        Op {
            name: "open",
            label: "open()+close() of an allowed file",
            n: ctx.pick(200_000, 20_000),
            arg: file.display().to_string(),
        },
        Op {
            name: "exec",
            label: "fork+exec of /bin/true",
            n: ctx.pick(2_000, 200),
            arg: "/bin/true".into(),
        },
    ];
    let policy = ctx.policy(
        "loops",
        &[ctx.dir.as_path()],
        &[format!("127.0.0.1:{}", sink.port)],
        "",
    )?;
    let loop_bin = ctx.bench_loop.display().to_string();
    let argv = |op: &Op| {
        vec![
            loop_bin.clone(),
            op.name.to_string(),
            op.n.to_string(),
            op.arg.clone(),
        ]
    };
    let ns = |out: &str| field(out, "ns_per_op");

    // Each run: every loop bare with no daemon, then a fresh daemon and
    // every loop guarded and unguarded, so drift and other load on the
    // machine weigh on both sides alike.
    let mut bare: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
    let mut guarded: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
    let mut loaded: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
    let mut audit_bytes = 0;
    let plain = |a: &[String]| {
        let mut cmd = ctx.user_cmd(&a[0]);
        cmd.args(&a[1..]);
        cmd
    };
    for run in 0..runs {
        for (i, op) in ops.iter().enumerate() {
            bare[i].push(ns(&stdout_of(&mut plain(&argv(op)))?)?);
        }
        let mut daemon = Daemon::start(ctx, &format!("syscalls-{run}"))?;
        for (i, op) in ops.iter().enumerate() {
            let a = argv(op);
            let a_ref: Vec<&str> = a.iter().map(String::as_str).collect();
            let out = stdout_of(&mut ctx.guarded(&daemon, &policy, &a_ref))
                .with_context(|| format!("guarded {} loop", op.name))?;
            guarded[i].push(ns(&out)?);
            loaded[i].push(ns(&stdout_of(&mut plain(&a))?)?);
        }
        daemon.stop()?;
        audit_bytes += std::fs::metadata(&daemon.log).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&daemon.log);
    }
    drop(sink);

    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let b = Stats::of(&bare[i]);
        let g = Row::new(
            format!("{}, guarded", op.label),
            "ns/op",
            b,
            Stats::of(&guarded[i]),
        );
        let ratio = g.ratio().unwrap_or(f64::NAN);
        targets.push(Target {
            what: format!("{} loop within 1.10x of bare", op.name),
            measured: format!("{ratio:.2}x"),
            met: Some(ratio <= 1.10),
            why: if ratio <= 1.10 {
                String::new()
            } else {
                why_slow(op.name, ratio, &loaded[i], &bare[i])
            },
        });
        rows.push(g);
        rows.push(Row::new(
            format!("{}, unguarded, daemon loaded", op.label),
            "ns/op",
            b,
            Stats::of(&loaded[i]),
        ));
    }
    Ok(Section {
        key: "syscalls",
        title: "Syscall overhead",
        notes: vec![format!(
            "Loops of {} connects, {} opens and {} fork+execs per run, {runs} runs each, after a 5% warm-up; bare runs had no daemon loaded. Guarded runs have every layer on and audit every operation ({:.0} MiB of audit log in this section). `SO_LINGER` 0 on each client socket keeps `TIME_WAIT` from exhausting ports.",
            ops[0].n,
            ops[1].n,
            ops[2].n,
            audit_bytes as f64 / 1048576.0
        )],
        details: json!({
            "rows": rows.iter().map(|r| r.json()).collect::<Vec<_>>(),
            "ops": ops.iter().map(|o| json!({"op": o.name, "n": o.n})).collect::<Vec<_>>(),
            "samples_ns_per_op": ops.iter().enumerate().map(|(i, o)| json!({
                "op": o.name, "bare": bare[i], "guarded": guarded[i], "unguarded_daemon_loaded": loaded[i],
            })).collect::<Vec<_>>(),
        }),
        rows,
        targets,
    })
}

/// A sentence on where the time goes, from what was measured.
fn why_slow(op: &str, ratio: f64, loaded: &[f64], bare: &[f64]) -> String {
    let tax = match (Stats::of(loaded), Stats::of(bare)) {
        (Some(l), Some(b)) => l.median / b.median,
        _ => f64::NAN,
    };
    let what = match op {
        "connect" => "each connect runs the cgroup connect4 program and emits an egress record, and Landlock checks the port",
        "open" => "each open runs the sys_enter/sys_exit_openat tracepoints (a path copy into a pending map, then a ring-buffer record) and Landlock's path walk",
        _ => "each fork+exec emits fork, exec, open (loader and libc) and exit records, and exec and its opens pass Landlock",
    };
    format!(
        "{ratio:.2}x: {what}; while the guarded loop runs, the daemon's syscall tracepoints are attached and put every task on the slow syscall path (the machine section measures that for unguarded processes; here, unguarded with no server running and the tracepoints detached: {tax:.2}x of bare), so part of the cost is that path, not the guard itself"
    )
}
