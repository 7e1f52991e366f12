//! The classes `mcpguard doctor` probes, in one table: what the probe
//! tries, what it must see for the class to be held, which `mcpguard
//! status` layers hold and record it, and which audit records of the
//! probe's launch count as its record. A class added here is probed,
//! judged and printed with no other change.

use serde_json::Value;

use super::probe::{self, Targets};

/// One class of denied attempt.
pub struct Class {
    /// Short name: the table's first column and the JSON `class`.
    pub name: &'static str,
    /// What the probe tries, in words.
    pub attempt: &'static str,
    /// What the probe does (in the guarded server).
    pub run: fn(&Targets) -> String,
    /// What the probe must see for the class to be held.
    pub expect: &'static [&'static str],
    /// The status layers that refuse the attempt.
    pub held_by: &'static [&'static str],
    /// The status layers that write its records.
    pub recorded_by: &'static [&'static str],
    /// Whether a record of the probe's launch is one of this class's.
    pub matches: fn(&Value, &Targets) -> bool,
}

pub const CLASSES: &[Class] = &[
    Class {
        name: "read",
        attempt: "read a file of yours the policy does not name",
        run: probe::read,
        expect: &["EACCES"],
        held_by: &["landlock"],
        recorded_by: &["audit_open", "audit_landlock"],
        matches: |r, t| {
            let file = t.file.to_str();
            (kind(r, "open") && denied(r) && r["path"].as_str() == file)
                || (kind(r, "landlock") && r["path"].as_str() == file && blocked(r, "fs.read_file"))
        },
    },
    Class {
        name: "connect",
        attempt: "TCP connect to an address the policy does not allow",
        run: probe::connect,
        expect: &["EPERM"],
        held_by: &["ebpf_egress"],
        recorded_by: &["ebpf_egress"],
        matches: |r, t| {
            kind(r, "connect")
                && r["verdict"] == "deny"
                && r["addr"].as_str() == Some(&t.connect.ip().to_string())
                && r["port"] == t.connect.port()
        },
    },
    Class {
        name: "name",
        attempt: "DNS lookup of a name the policy does not allow",
        run: probe::name,
        expect: &["NXDOMAIN"],
        held_by: &["ebpf_egress"],
        recorded_by: &["ebpf_egress"],
        matches: |r, t| kind(r, "dns") && r["verdict"] == "deny" && r["qname"] == t.name.as_str(),
    },
    Class {
        name: "exec",
        attempt: "run a program outside the policy's exec allowance",
        run: probe::exec,
        expect: &["EACCES"],
        held_by: &["landlock"],
        recorded_by: &["audit_proc", "audit_landlock"],
        matches: |r, t| {
            let exec = t.exec.to_str();
            (kind(r, "exec") && denied(r) && r["filename"].as_str() == exec)
                || (kind(r, "landlock") && r["path"].as_str() == exec && blocked(r, "fs.execute"))
        },
    },
    Class {
        name: "chmod",
        attempt: "change the mode of a file the server may not write",
        run: probe::chmod,
        // The read-only view refuses it; it is there on every launch.
        expect: &["EROFS"],
        held_by: &[],
        recorded_by: &["audit_attrs"],
        matches: |r, t| {
            kind(r, "attr")
                && denied(r)
                && r["path"].as_str() == t.file.to_str()
                && r["call"].as_str().is_some_and(|c| c.contains("chmod"))
        },
    },
    Class {
        name: "signal",
        attempt: "signal a process of yours outside the guard",
        run: probe::signal,
        // Landlock's signal scoping (ABI 6).
        expect: &["EPERM"],
        held_by: &["landlock"],
        recorded_by: &["audit_syscalls", "audit_landlock"],
        matches: |r, t| {
            (kind(r, "syscall") && denied(r) && r["name"] == "kill")
                || (kind(r, "landlock") && blocked(r, "scope.signal") && r["opid"] == t.pid)
        },
    },
    Class {
        name: "abstract_unix",
        attempt: "connect to an abstract Unix socket outside the guard",
        run: probe::abstract_unix,
        // Landlock's abstract-socket scoping (ABI 6).
        expect: &["EPERM"],
        held_by: &["landlock"],
        recorded_by: &["audit_unix", "audit_landlock"],
        matches: |r, t| {
            let named = r["path"]
                .as_str()
                .is_some_and(|p| p.trim_start_matches('@') == t.abstract_name);
            named
                && ((kind(r, "unix_connect") && denied(r))
                    || (kind(r, "landlock") && blocked(r, "scope.abstract_unix_socket")))
        },
    },
];

fn kind(r: &Value, kind: &str) -> bool {
    r["kind"] == kind
}

fn denied(r: &Value) -> bool {
    r["denied"] == true
}

/// Whether a `landlock` record names `right` among the refused rights.
fn blocked(r: &Value, right: &str) -> bool {
    r["blockers"]
        .as_array()
        .is_some_and(|b| b.iter().any(|x| x == right))
}
