//! Which tools a server may offer, and whether they changed since they were
//! first seen.
//!
//! Pins: on the first `tools/list` a user's server answers under a policy
//! name, a hash of each tool's name, description and input schema is stored
//! in the daemon's state directory (root-owned). Later sessions compare
//! against that baseline; the baseline is kept until the user deletes the
//! pin file, so a change is reported every session until it is re-approved.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::{
    atomic_file::{self, Ownership},
    policy::Tools,
};

#[derive(Debug, Error)]
pub enum PinError {
    #[error("tool pins {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tool pins {} are corrupt: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// `*` matches any run of characters, `?` exactly one; everything else is
/// literal. Kept by hand rather than `glob`/`globset`: those match paths
/// (`/` is special, `**`, classes, escapes), while tool names need only
/// these two wildcards, matched in linear time.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with backtracking to the last `*`: linear in
    // practice, never exponential.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether the policy lets the client see and call `tool` (deny wins).
pub fn allowed(tools: &Tools, tool: &str) -> bool {
    if tools.deny.iter().any(|g| glob_match(g, tool)) {
        return false;
    }
    match &tools.allow {
        Some(allow) => allow.iter().any(|g| glob_match(g, tool)),
        None => true,
    }
}

/// JSON with object keys sorted at every level, so a hash does not depend
/// on the order a server happens to emit.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, String> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            let body: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String((*k).clone())))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// `sha256:<hex>` of a tool's name, description and input schema.
pub fn tool_hash(tool: &Value) -> String {
    let subject = serde_json::json!({
        "name": tool.get("name"),
        "description": tool.get("description"),
        "inputSchema": tool.get("inputSchema"),
    });
    let digest = Sha256::digest(canonical(&subject).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A stored baseline: tool name → hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    pub tools: BTreeMap<String, String>,
}

/// How one tool differs from its pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added { hash: String },
    Changed { old: String, new: String },
    Removed { old: String },
}

impl Change {
    pub fn name(&self) -> &'static str {
        match self {
            Change::Added { .. } => "added",
            Change::Changed { .. } => "changed",
            Change::Removed { .. } => "removed",
        }
    }
}

/// Where pins live: `<state>/pins/<uid>/<policy name>.json`.
pub struct PinStore {
    path: PathBuf,
}

impl PinStore {
    pub fn new(state_dir: &Path, uid: u32, policy_name: &str) -> PinStore {
        PinStore {
            path: state_dir
                .join("pins")
                .join(uid.to_string())
                .join(format!("{policy_name}.json")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The baseline, or `None` on first use.
    pub fn load(&self) -> Result<Option<Pins>, PinError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| PinError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PinError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Write the baseline (root-only directories and file), atomically.
    pub fn save(&self, pins: &Pins) -> Result<(), PinError> {
        let io = |source| PinError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().expect("pin path has a parent");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let text = serde_json::to_vec_pretty(pins).expect("pins serialise");
        let own = Ownership {
            mode: 0o600,
            owner: None,
        };
        atomic_file::replace(&self.path, &text, own).map_err(io)
    }
}

/// Differences between a baseline and the tools seen now. `complete` says
/// whether `seen` is the whole list (then missing tools count as removed).
pub fn diff(
    baseline: &Pins,
    seen: &BTreeMap<String, String>,
    complete: bool,
) -> Vec<(String, Change)> {
    let mut out = Vec::new();
    for (name, hash) in seen {
        match baseline.tools.get(name) {
            None => out.push((name.clone(), Change::Added { hash: hash.clone() })),
            Some(old) if old != hash => out.push((
                name.clone(),
                Change::Changed {
                    old: old.clone(),
                    new: hash.clone(),
                },
            )),
            Some(_) => {}
        }
    }
    if complete {
        for (name, old) in &baseline.tools {
            if !seen.contains_key(name) {
                out.push((name.clone(), Change::Removed { old: old.clone() }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::policy::ToolChange;

    #[test]
    fn globs_match_like_shells() {
        assert!(glob_match("get_*", "get_time"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*_repo*", "delete_repo_now"));
        assert!(!glob_match("get_*", "forget_time"));
        assert!(glob_match("**x", "aaax"));
        assert!(!glob_match("*x*y", "aaaxzzz"));
        // Pathological patterns stay fast.
        assert!(!glob_match(&"*a".repeat(50), &"a".repeat(40)));
    }

    #[test]
    fn deny_wins_and_a_missing_allow_allows_all() {
        let mut t = Tools {
            allow: None,
            deny: vec!["delete_*".into()],
            log_args: vec![],
            excerpt: vec![],
            on_tool_change: ToolChange::Warn,
            strip_invisible: false,
            call_net: Default::default(),
        };
        assert!(allowed(&t, "echo"));
        assert!(!allowed(&t, "delete_repo"));
        t.allow = Some(vec!["get_*".into(), "delete_*".into()]);
        assert!(allowed(&t, "get_time"));
        assert!(!allowed(&t, "echo"));
        assert!(!allowed(&t, "delete_repo"));
    }

    #[test]
    fn hashes_ignore_key_order_but_not_content() {
        let a = serde_json::json!({"name": "t", "description": "d", "inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}}});
        let b: Value = serde_json::from_str(
            r#"{"inputSchema": {"properties": {"x": {"type": "string"}}, "type": "object"}, "description": "d", "name": "t", "title": "ignored"}"#,
        )
        .unwrap();
        assert_eq!(tool_hash(&a), tool_hash(&b));
        let mut c = a.clone();
        c["description"] = "d, and also read ~/.ssh".into();
        assert_ne!(tool_hash(&a), tool_hash(&c));
        assert!(tool_hash(&a).starts_with("sha256:"));
    }

    #[test]
    fn diff_reports_added_changed_and_removed() {
        let base = Pins {
            tools: [("a", "1"), ("b", "2"), ("c", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let seen: BTreeMap<String, String> = [("a", "1"), ("b", "9"), ("d", "4")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = diff(&base, &seen, true);
        let names: Vec<(&str, &str)> = d.iter().map(|(n, c)| (n.as_str(), c.name())).collect();
        assert_eq!(names, [("b", "changed"), ("d", "added"), ("c", "removed")]);
        assert_eq!(diff(&base, &seen, false).len(), 2);
    }

    #[test]
    fn pins_round_trip_with_root_only_modes() {
        let dir = std::env::temp_dir().join(format!("mcpguard-pins-{}", std::process::id()));
        let store = PinStore::new(&dir, 1000, "time");
        assert_eq!(store.load().unwrap(), None);
        let pins = Pins {
            tools: [("a".to_string(), "sha256:00".to_string())].into(),
        };
        store.save(&pins).unwrap();
        assert_eq!(store.load().unwrap(), Some(pins));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(mode(store.path().parent().unwrap()), 0o700);
        fs::write(store.path(), "{not json").unwrap();
        assert!(matches!(store.load(), Err(PinError::Corrupt { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
