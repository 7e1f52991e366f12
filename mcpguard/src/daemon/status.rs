//! What `mcpguard status` receives over the daemon's socket
//! ([`super::proto::Response::Status`]): the daemon's version, uptime and
//! kernel layers, the audit log's health, and each running server with
//! per-kind record counts. Both the daemon and the CLI read these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::writer::SinkStatus;

/// Record counts of one kind.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub allowed: u64,
    pub denied: u64,
}

/// A server's most recent denial.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LastDenial {
    pub kind: String,
    /// The record in a few words, as `mcpguard audit` prints it.
    pub summary: String,
    /// The record's time (RFC 3339).
    pub ts: String,
}

/// One running server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServerStatus {
    pub server: String,
    pub policy: String,
    pub launch: String,
    /// The server's main process, once its launch record is written.
    pub pid: Option<u32>,
    pub uid: u32,
    /// When the launch began (RFC 3339).
    pub started: String,
    pub uptime_s: u64,
    /// Records written for this launch, by kind.
    pub counts: BTreeMap<String, Counts>,
    pub last_denial: Option<LastDenial>,
    /// The launch's `[audit] files` level, from its launch record (absent
    /// before that record, and from daemons before levels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_files: Option<String>,
    /// The tools whose calls open network rules of their own
    /// (`[tools.<name>] network`), from its launch record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub call_network: Vec<String>,
}

/// One kernel layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerStatus {
    pub layer: String,
    pub active: bool,
    /// What it is, or why it is missing.
    pub detail: String,
}

/// The answer to `mcpguard status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    /// The daemon's version.
    pub version: String,
    pub pid: u32,
    /// When the daemon started (RFC 3339).
    pub started: String,
    pub uptime_s: u64,
    pub layers: Vec<LayerStatus>,
    /// Per guarantee class, which layers hold it on this kernel, or that
    /// it is weaker or missing ([`crate::kernel::coverage`]; absent from
    /// daemons before it was added).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guarantees: Vec<crate::kernel::coverage::Row>,
    /// Whether records reach the audit log, and what waits in memory if
    /// not (absent from daemons before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<SinkStatus>,
    /// `Some(uid)`: only that uid's servers are listed.
    pub only_uid: Option<u32>,
    pub servers: Vec<ServerStatus>,
}
