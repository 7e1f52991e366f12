//! Per-server record budgets: the one place every record source (the
//! socket fence, the DNS resolver, the MCP tap, the kernel ring buffer,
//! Landlock's audit records)
//! asks before a record of a server is written.
//!
//! Each server gets two token buckets, one for its denials and one for
//! everything else, each of [`BudgetConfig::burst`] records and refilled at
//! [`BudgetConfig::rate`] records a second: a flood of allowed events does
//! not push the server's denials out of the log (as in the kernel's share,
//! allow records go first). A record its bucket has no token for is not
//! written; it is counted per source (and, if it
//! was a denial, as a denial), and the audit thread turns the counts into
//! `loss` records (`"source": "budget:<source>"`, with `denials`) every
//! half second and when the server ends. A server looping on refused calls
//! therefore fills the log at a bounded rate, and the refusals are still
//! counted. The records that frame a server's trail (launch, exit, limits,
//! losses) are never held back.
//!
//! The kernel's own share of the ring buffer (`loss` records with
//! `"source": "rate"`) still applies before this: it protects the ring
//! buffer, the budget protects the log.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
    time::Instant,
};

use crate::audit::{AuditRecord, Body, Origin};

/// Default refill rate: records a second per server.
pub const DEFAULT_RATE: u32 = 2_000;
/// Default bucket size: records a server may write in a burst (a server's
/// start-up opens thousands of files).
pub const DEFAULT_BURST: u32 = 20_000;

/// How big each server's bucket is and how fast it refills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    pub rate: u32,
    pub burst: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

/// Where a record came from, as `loss` records name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Kernel,
    SocketFence,
    Dns,
    Mcp,
    Daemon,
    /// Landlock's own audit records.
    Landlock,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Kernel => "kernel",
            Source::SocketFence => "socket_fence",
            Source::Dns => "dns",
            Source::Mcp => "mcp",
            Source::Daemon => "daemon",
            Source::Landlock => "landlock",
        }
    }

    /// The source of a record the daemon made (not from the ring buffer).
    pub fn of(body: &Body) -> Source {
        match body {
            Body::Socket { .. } => Source::SocketFence,
            Body::Dns { .. } => Source::Dns,
            Body::Mcp { .. } | Body::ToolChanged { .. } => Source::Mcp,
            Body::Landlock(_) => Source::Landlock,
            _ => Source::Daemon,
        }
    }
}

/// Records a server's budget held back, per source, not yet reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub lost: u64,
    pub denials: u64,
}

/// One server's buckets: `tokens[1]` for denials, `tokens[0]` the rest.
#[derive(Debug)]
struct Bucket {
    origin: Origin,
    tokens: [f64; 2],
    refilled: Instant,
    held: BTreeMap<Source, Held>,
}

/// Every running server's budget, by launch name.
#[derive(Debug, Default)]
pub struct Budgets {
    config: BudgetConfig,
    servers: Mutex<HashMap<String, Bucket>>,
}

/// Records that frame a server's trail (and the reports of what was
/// lost): never held back, or a flood could hide how a server ended.
fn exempt(body: &Body) -> bool {
    matches!(
        body,
        Body::Daemon { .. }
            | Body::Launch { .. }
            | Body::LaunchFailed { .. }
            | Body::SecretMinted { .. }
            | Body::ServerExit { .. }
            | Body::Limit { .. }
            | Body::Loss { .. }
    ) || matches!(body, Body::Mcp { event, .. } if event == "session")
}

impl Budgets {
    pub fn new(config: BudgetConfig) -> Budgets {
        Budgets {
            config,
            servers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give a new server its (full) bucket.
    pub fn register(&self, origin: &Origin) {
        self.lock().insert(
            origin.launch.clone(),
            Bucket {
                origin: origin.clone(),
                tokens: [f64::from(self.config.burst); 2],
                refilled: Instant::now(),
                held: BTreeMap::new(),
            },
        );
    }

    /// Whether `rec` (from `source`) may be written; if not, it is counted.
    /// Records of no registered server are always written.
    pub fn admit(&self, source: Source, rec: &AuditRecord) -> bool {
        if exempt(&rec.body) {
            return true;
        }
        let Some(launch) = &rec.launch else {
            return true;
        };
        let mut servers = self.lock();
        let Some(bucket) = servers.get_mut(launch) else {
            return true;
        };
        let now = Instant::now();
        let refill =
            now.duration_since(bucket.refilled).as_secs_f64() * f64::from(self.config.rate);
        for tokens in &mut bucket.tokens {
            *tokens = (*tokens + refill).min(f64::from(self.config.burst));
        }
        bucket.refilled = now;
        let tokens = &mut bucket.tokens[usize::from(rec.denied)];
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return true;
        }
        let held = bucket.held.entry(source).or_default();
        held.lost += 1;
        held.denials += u64::from(rec.denied);
        false
    }

    /// Every count held back since the last call, with its server.
    pub fn take_held(&self) -> Vec<(Origin, Source, Held)> {
        let mut out = Vec::new();
        for bucket in self.lock().values_mut() {
            for (source, held) in std::mem::take(&mut bucket.held) {
                out.push((bucket.origin.clone(), source, held));
            }
        }
        out
    }

    /// The server is gone: its last counts, and its bucket is dropped.
    pub fn forget(&self, launch: &str) -> Vec<(Origin, Source, Held)> {
        let Some(bucket) = self.lock().remove(launch) else {
            return Vec::new();
        };
        bucket
            .held
            .into_iter()
            .map(|(source, held)| (bucket.origin.clone(), source, held))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn origin(launch: &str) -> Origin {
        Origin {
            server: "flood".into(),
            policy: "flood".into(),
            launch: launch.into(),
            uid: 1000,
        }
    }

    fn socket(launch: &str) -> AuditRecord {
        let mut rec = AuditRecord::new(
            Body::Socket {
                family: "AF_PACKET".into(),
                sock_type: "SOCK_RAW".into(),
                protocol: "0".into(),
                verdict: "deny".into(),
            },
            Some(&origin(launch)),
            SystemTime::now(),
        );
        rec.denied = true;
        rec
    }

    #[test]
    fn a_server_over_its_budget_is_held_back_and_counted_per_source() {
        let budgets = Budgets::new(BudgetConfig { rate: 1, burst: 5 });
        budgets.register(&origin("flood-1"));
        budgets.register(&origin("calm-2"));
        let admitted = (0..100)
            .filter(|_| budgets.admit(Source::SocketFence, &socket("flood-1")))
            .count();
        assert_eq!(admitted, 5);
        // Another server's bucket is its own.
        assert!(budgets.admit(Source::SocketFence, &socket("calm-2")));
        // Framing records always pass.
        let exit = AuditRecord::new(
            Body::ServerExit {
                exit_code: Some(0),
                signal: None,
            },
            Some(&origin("flood-1")),
            SystemTime::now(),
        );
        assert!(budgets.admit(Source::Daemon, &exit));
        let held = budgets.take_held();
        assert_eq!(held.len(), 1);
        let (o, source, h) = &held[0];
        assert_eq!(
            (o.launch.as_str(), *source),
            ("flood-1", Source::SocketFence)
        );
        assert_eq!(
            *h,
            Held {
                lost: 95,
                denials: 95
            }
        );
        assert!(budgets.take_held().is_empty(), "reported once");
        // Denials have a bucket of their own.
        let mut allowed = socket("flood-1");
        allowed.denied = false;
        let passed = (0..10)
            .filter(|_| budgets.admit(Source::Kernel, &allowed))
            .count();
        assert_eq!(passed, 5);
        budgets.take_held();
        assert!(!budgets.admit(Source::Dns, &socket("flood-1")));
        assert_eq!(budgets.forget("flood-1")[0].2.lost, 1);
        // Gone: no longer budgeted.
        assert!(budgets.admit(Source::Dns, &socket("flood-1")));
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let budgets = Budgets::new(BudgetConfig {
            rate: 1000,
            burst: 10,
        });
        budgets.register(&origin("s-1"));
        while budgets.admit(Source::Kernel, &socket("s-1")) {}
        std::thread::sleep(Duration::from_millis(20));
        let again = (0..100)
            .filter(|_| budgets.admit(Source::Kernel, &socket("s-1")))
            .count();
        assert!((5..=10).contains(&again), "{again}");
    }
}
