//! Per-launch record counts, kept by the audit thread ([`Stats`]): it sees
//! every record as it is written, and a status request asks it for a
//! snapshot ([`super::status::ServerStatus`] per running server).

use std::{
    collections::{BTreeMap, HashMap},
    time::SystemTime,
};

use serde_json::Value;

use super::status::{Counts, LastDenial, ServerStatus};
use crate::audit::{format_ts, query, AuditRecord, Body, Origin};

/// Per-launch counters, kept by the audit thread.
#[derive(Debug, Default)]
pub struct Stats {
    launches: HashMap<String, LaunchStats>,
}

#[derive(Debug)]
struct LaunchStats {
    origin: Origin,
    started: SystemTime,
    pid: Option<u32>,
    counts: BTreeMap<&'static str, Counts>,
    last_denial: Option<AuditRecord>,
    audit_files: Option<String>,
    /// The tools with per-call network rules, from the launch record.
    call_network: Vec<String>,
}

impl Stats {
    /// A launch began (its cgroup was registered with the audit thread).
    pub fn register(&mut self, origin: &Origin) {
        self.launches.insert(
            origin.launch.clone(),
            LaunchStats {
                origin: origin.clone(),
                started: SystemTime::now(),
                pid: None,
                counts: BTreeMap::new(),
                last_denial: None,
                audit_files: None,
                call_network: Vec::new(),
            },
        );
    }

    /// A launch ended.
    pub fn forget(&mut self, launch: &str) {
        self.launches.remove(launch);
    }

    /// Count a record as it is written (after redaction).
    pub fn record(&mut self, rec: &AuditRecord) {
        let Some(stats) = rec.launch.as_deref().and_then(|l| self.launches.get_mut(l)) else {
            return;
        };
        let kind = rec.body.kind();
        if let Body::Launch { layers, .. } = &rec.body {
            stats.pid = rec.pid;
            stats.audit_files = layers
                .get("audit_files")
                .and_then(Value::as_str)
                .map(str::to_owned);
            stats.call_network = (layers.get("call_network").and_then(Value::as_array))
                .map(|tools| tools.iter().filter_map(Value::as_str).map(str::to_owned))
                .into_iter()
                .flatten()
                .collect();
        }
        let counts = stats.counts.entry(kind).or_default();
        if rec.denied {
            counts.denied += 1;
            stats.last_denial = Some(rec.clone());
        } else {
            counts.allowed += 1;
        }
    }

    /// Every launch, oldest first.
    pub fn snapshot(&self) -> Vec<ServerStatus> {
        let now = SystemTime::now();
        let mut servers: Vec<ServerStatus> = self
            .launches
            .values()
            .map(|s| ServerStatus {
                server: s.origin.server.clone(),
                policy: s.origin.policy.clone(),
                launch: s.origin.launch.clone(),
                pid: s.pid,
                uid: s.origin.uid,
                started: format_ts(s.started),
                uptime_s: now.duration_since(s.started).unwrap_or_default().as_secs(),
                counts: s
                    .counts
                    .iter()
                    .map(|(k, c)| ((*k).to_string(), *c))
                    .collect(),
                last_denial: s.last_denial.as_ref().map(summarize),
                audit_files: s.audit_files.clone(),
                call_network: s.call_network.clone(),
            })
            .collect();
        servers.sort_by(|a, b| (&a.started, &a.launch).cmp(&(&b.started, &b.launch)));
        servers
    }
}

fn summarize(rec: &AuditRecord) -> LastDenial {
    let kind = rec.body.kind();
    let value = serde_json::to_value(rec).unwrap_or(Value::Null);
    LastDenial {
        kind: kind.to_string(),
        summary: query::describe(kind, &value),
        ts: rec.ts.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn origin(launch: &str, uid: u32) -> Origin {
        Origin {
            server: "time".into(),
            policy: "/etc/mcpguard/policies/time.toml".into(),
            launch: launch.into(),
            uid,
        }
    }

    fn open(result: i64, o: &Origin) -> AuditRecord {
        AuditRecord::new(
            Body::Open {
                call: "openat".into(),
                path: "/home/u/.ssh/id_rsa".into(),
                path_truncated: false,
                flags: vec!["O_RDONLY".into()],
                mode: None,
                dirfd: None,
                result,
                errno: None,
            },
            Some(o),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn stats_count_by_kind_and_keep_the_last_denial_per_launch() {
        let mut stats = Stats::default();
        let a = origin("time-1", 1000);
        let b = origin("time-2", 1001);
        stats.register(&a);
        stats.register(&b);
        let mut launch = AuditRecord::new(
            Body::Launch {
                argv: vec!["x".into()],
                cgroup: "/sys/fs/cgroup/mcpguard/time-1".into(),
                cwd: "/".into(),
                layers: serde_json::json!({ "audit_files": "denied", "call_network": ["fetch"] }),
            },
            Some(&a),
            SystemTime::now(),
        );
        launch.pid = Some(4242);
        stats.record(&launch);
        stats.record(&open(3, &a));
        stats.record(&open(3, &a));
        stats.record(&open(-13, &a));
        stats.record(&open(3, &b));
        // Records of unknown launches and without a launch are ignored.
        stats.record(&open(-13, &origin("gone-9", 1000)));
        stats.record(&AuditRecord::new(
            Body::Loss {
                lost: 1,
                total: 1,
                source: "ringbuf".into(),
                first_ts: None,
                last_ts: None,
                denials: None,
            },
            None,
            SystemTime::now(),
        ));

        let snap = stats.snapshot();
        assert_eq!(snap.len(), 2);
        let one = snap.iter().find(|s| s.launch == "time-1").unwrap();
        assert_eq!(one.pid, Some(4242));
        assert_eq!(one.uid, 1000);
        assert_eq!(one.audit_files.as_deref(), Some("denied"));
        assert_eq!(one.call_network, ["fetch"]);
        let two = snap.iter().find(|s| s.launch == "time-2").unwrap();
        assert!(two.call_network.is_empty());
        assert_eq!(
            one.counts["open"],
            Counts {
                allowed: 2,
                denied: 1
            }
        );
        assert_eq!(
            one.counts["launch"],
            Counts {
                allowed: 1,
                denied: 0
            }
        );
        let denial = one.last_denial.as_ref().unwrap();
        assert_eq!(denial.kind, "open");
        assert!(
            denial.summary.contains("/home/u/.ssh/id_rsa"),
            "{}",
            denial.summary
        );
        assert_eq!(denial.ts, "2023-11-14T22:13:20.000000Z");
        let two = snap.iter().find(|s| s.launch == "time-2").unwrap();
        assert_eq!(two.pid, None);
        assert!(two.last_denial.is_none());

        stats.forget("time-1");
        assert_eq!(stats.snapshot().len(), 1);
    }
}
