//! Daemon memory: resident set size idle (fresh daemon, nothing running),
//! and with 20 guarded servers (`mcpguard run ... -- /bin/sleep 30`) running
//! at once.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::{Children, Ctx, Daemon, Row, Section, Stats, Target};

const SERVERS: usize = 20;

fn count(log: &std::path::Path, kind: &str) -> usize {
    let needle = format!(r#""kind":"{kind}""#);
    std::fs::read_to_string(log)
        .map(|t| t.lines().filter(|l| l.contains(&needle)).count())
        .unwrap_or(0)
}

fn wait_count(daemon: &Daemon, kind: &str, want: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&daemon.log, kind) < want {
        if Instant::now() > deadline {
            bail!(
                "only {} of {want} `{kind}` records within 30 s:\n{}",
                count(&daemon.log, kind),
                daemon.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// RSS in MiB, the largest of a few samples over half a second.
fn sample(daemon: &Daemon) -> Result<f64> {
    let mut max = 0;
    for _ in 0..5 {
        max = max.max(daemon.rss_kib()?);
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(max as f64 / 1024.0)
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let rounds = ctx.pick(3, 1);
    let policy = ctx.policy("sleep", &[], &[], "")?;
    let mut daemon = Daemon::start(ctx, "memory")?;
    std::thread::sleep(Duration::from_millis(500));
    let idle = sample(&daemon)?;
    let mut busy = Vec::new();
    let mut after = Vec::new();
    for round in 0..rounds {
        let mut servers = Children::default();
        for _ in 0..SERVERS {
            servers.0.push(
                ctx.guarded(&daemon, &policy, &["/bin/sleep", "30"])
                    .spawn()?,
            );
        }
        wait_count(&daemon, "launch", SERVERS * (round + 1))?;
        // Let every session reach its steady state (relays up, exec done).
        std::thread::sleep(Duration::from_millis(300));
        busy.push(sample(&daemon)?);
        servers.stop_all();
        wait_count(&daemon, "server_exit", SERVERS * (round + 1))?;
        std::thread::sleep(Duration::from_millis(300));
        after.push(sample(&daemon)?);
    }
    daemon.stop()?;

    let idle_s = Stats::of(&[idle]);
    let busy_s = Stats::of(&busy);
    let rows = vec![
        Row::new("daemon RSS idle", "MiB", None, idle_s),
        Row::new(
            format!("daemon RSS with {SERVERS} guarded servers (vs idle)"),
            "MiB",
            idle_s,
            busy_s,
        ),
        Row::new(
            format!("daemon RSS after the {SERVERS} exited (vs idle)"),
            "MiB",
            idle_s,
            Stats::of(&after),
        ),
    ];
    let peak = busy_s.map(|s| s.median).unwrap_or(f64::NAN);
    let met = peak < 30.0;
    Ok(Section {
        key: "memory",
        title: "Memory",
        notes: vec![format!(
            "VmRSS of the daemon process (all threads), largest of 5 samples over 0.5 s; {rounds} round(s) of {SERVERS} `mcpguard run -- /bin/sleep 30` launched in parallel, measured once all {SERVERS} launch records were written."
        )],
        details: json!({
            "rows": rows.iter().map(|r| r.json()).collect::<Vec<_>>(),
            "idle_mib": idle, "with_servers_mib": busy, "after_mib": after,
            "per_server_kib": (peak - idle) * 1024.0 / SERVERS as f64,
        }),
        targets: vec![Target {
            what: format!("daemon < 30 MiB RSS with {SERVERS} servers"),
            measured: format!("{peak:.1} MiB"),
            met: Some(met),
            why: if met {
                String::new()
            } else {
                format!(
                    "{idle:.1} MiB idle (eBPF objects, maps' user-side copies, the tokio runtime) plus {:.0} KiB per server (each session's threads: session, control, three stdio relays and a DNS resolver, with their stacks and buffers)",
                    (peak - idle) * 1024.0 / SERVERS as f64
                )
            },
        }],
        rows,
    })
}
