//! Name resolution and large allow maps: `bench_loop`'s `dns` loop (one UDP
//! A query at a time) straight to a test upstream resolver of this process,
//! bare, and to 127.0.0.53:53 under guard, where every port-53 destination
//! is redirected to the daemon's resolver for that server, which forwards
//! the allowed name to the same upstream (`--upstream-dns`); and the
//! `connect` loop, guarded, under a policy of 1 allow entry and one of
//! 10,000 (9,999 distinct `10.x.y.z/32` on port 443 besides the sink).
//!
//! Everything stays on loopback: the upstream on 127.0.0.1 answers
//! `allowed.test` with 192.0.2.2 (TTL 60; a documentation address, since
//! the resolver refuses to open a loopback answer as DNS rebinding) and
//! every other name NXDOMAIN; the connect sink on 127.0.0.1 accepts and
//! drops every connection. The figures are informational rows: no targets.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::json;

use super::{field, stdout_of, syscalls::Sink, Ctx, Daemon, Row, Section, Stats};

/// The name the upstream answers and the policy allows.
const NAME: &str = "allowed.test";
/// Where guarded lookups are sent: any port-53 address is redirected.
const STUB: &str = "127.0.0.53";
/// Allow entries in the large policy, the sink's included.
const BIG: usize = 10_000;

/// The upstream's answer to one query, or `None` for a datagram that is not
/// a query: `allowed.test` A is 192.0.2.2 (TTL 60), other types of it have
/// no answer, other names are NXDOMAIN.
fn answer(q: &[u8]) -> Option<Vec<u8>> {
    // Header, then exactly one question: labels, QTYPE, QCLASS.
    if q.len() < 12 || q[2] & 0x80 != 0 || q[4..6] != [0, 1] {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let end = i + 4;
    let question = q.get(12..end)?;
    let known = labels.join(".") == NAME;
    let a = known && qtype == 1;
    let mut r = Vec::with_capacity(end + 16);
    r.extend_from_slice(&q[..2]);
    // QR, the query's opcode and RD, RA; NOERROR or NXDOMAIN.
    r.push(0x80 | (q[2] & 0x79));
    r.push(if known { 0x80 } else { 0x83 });
    r.extend_from_slice(&[0, 1, 0, a as u8, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if a {
        // Name: pointer to the question's; A, IN, TTL 60, 4 bytes.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2]);
    }
    Some(r)
}

/// The test upstream resolver on UDP 127.0.0.1, until dropped.
struct Upstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Result<Upstream> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let addr = sock.local_addr()?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-dns".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while !flag.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        if let Some(r) = answer(&buf[..n]) {
                            let _ = sock.send_to(&r, from);
                        }
                    }
                }
            })?;
        Ok(Upstream {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let runs = ctx.pick(5, 2);
    let lookups: u64 = ctx.pick(20_000, 1_000);
    let connects: u64 = ctx.pick(50_000, 5_000);
    let upstream = Upstream::start()?;
    let sink = Sink::start()?;

    let sink_rule = format!("127.0.0.1:{}", sink.port);
    let dns_policy = ctx.policy(
        "dns-lookups",
        &[ctx.dir.as_path()],
        &[format!("{NAME}:80")],
        "",
    )?;
    let small = ctx.policy(
        "allow-1",
        &[ctx.dir.as_path()],
        std::slice::from_ref(&sink_rule),
        "",
    )?;
    let mut big_allow = vec![sink_rule];
    big_allow.extend(
        (1..BIG as u32).map(|i| format!("10.{}.{}.{}:443", i >> 16, (i >> 8) & 0xff, i & 0xff)),
    );
    let big = ctx.policy("allow-10000", &[ctx.dir.as_path()], &big_allow, "")?;

    let loop_bin = ctx.bench_loop.display().to_string();
    let (n_l, n_c) = (lookups.to_string(), connects.to_string());
    let up_port = upstream.addr.port().to_string();
    let bare_argv = [loop_bin.as_str(), "dns", &n_l, "127.0.0.1", &up_port, NAME];
    let guarded_argv = [loop_bin.as_str(), "dns", &n_l, STUB, "53", NAME];
    let sink_port = sink.port.to_string();
    let connect_argv = [loop_bin.as_str(), "connect", &n_c, &sink_port];
    let upstream_arg = upstream.addr.to_string();
    let per_sec = |out: &str| field(out, "ns_per_op").map(|ns| 1e9 / ns);

    let (mut bare, mut guarded) = (Vec::new(), Vec::new());
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut cmd = ctx.user_cmd(bare_argv[0]);
        cmd.args(&bare_argv[1..]);
        bare.push(per_sec(&stdout_of(&mut cmd).context("bare dns loop")?)?);

        let mut daemon = Daemon::start_with(
            ctx,
            &format!("dns-{run}"),
            &["--upstream-dns", &upstream_arg],
        )?;
        let out = stdout_of(&mut ctx.guarded(&daemon, &dns_policy, &guarded_argv))
            .with_context(|| format!("guarded dns loop; daemon stderr:\n{}", daemon.stderr()))?;
        guarded.push(per_sec(&out)?);
        // Alternate which map size goes first, so drift weighs on both.
        let order = if run % 2 == 0 {
            [(&small, false), (&big, true)]
        } else {
            [(&big, true), (&small, false)]
        };
        for (policy, is_big) in order {
            let out = stdout_of(&mut ctx.guarded(&daemon, policy, &connect_argv))
                .with_context(|| format!("guarded connect loop ({})", policy.display()))?;
            let ns = field(&out, "ns_per_op")?;
            if is_big {
                many.push(ns)
            } else {
                one.push(ns)
            }
        }
        daemon.stop()?;
        let _ = std::fs::remove_file(&daemon.log);
    }
    drop(sink);
    drop(upstream);

    let rows = vec![
        Row::new(
            format!(
                "DNS A lookups, one at a time: guarded via {STUB}:53 → daemon resolver → upstream, vs bare straight to upstream"
            ),
            "lookups/s",
            Stats::of(&bare),
            Stats::of(&guarded),
        ),
        Row::new(
            format!(
                "connect()+close() to allowed 127.0.0.1 port, guarded: {BIG}-entry allow map, vs 1-entry map as \"bare\""
            ),
            "ns/op",
            Stats::of(&one),
            Stats::of(&many),
        ),
    ];
    Ok(Section {
        key: "dns",
        title: "DNS resolver and allow-map size",
        notes: vec![
            format!(
                "{lookups} sequential UDP A queries for `{NAME}` per run, {runs} runs, each a fresh socket (`socket`, `connect`, `send`, `recv`, `close`). Bare: straight to the bench's upstream on {}; guarded (policy allows `{NAME}:80`): to {STUB}:53, redirected to the daemon's per-server resolver, which checks the name, forwards it to the same upstream (`--upstream-dns`) and opens the answer's address. Informational: no target.",
                upstream_arg
            ),
            format!(
                "{connects} guarded connects per run to the allowed sink port under a 1-entry policy and a {BIG}-entry one (the sink plus {} distinct `10.x.y.z:443` /32s), same daemon, order alternating per run. The ratio is the cost of the larger allow map on each connect. Informational: no target.",
                BIG - 1
            ),
        ],
        details: json!({
            "rows": rows.iter().map(|r| r.json()).collect::<Vec<_>>(),
            "lookups_per_run": lookups,
            "connects_per_run": connects,
            "samples": {
                "dns_lookups_per_s": { "bare": bare, "guarded": guarded },
                "connect_ns_per_op": { "allow_1": one, "allow_10000": many },
            },
        }),
        rows,
        targets: Vec::new(),
    })
}
