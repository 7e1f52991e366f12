//! `[audit]`: how much of a server's allowed activity the kernel programs
//! record. Refusals, execs, Unix-socket connects, egress decisions, DNS
//! and MCP messages are recorded at every level; `files` decides the rest
//! of the file activity (opens, links, renames, mkdir, unlink, rmdir,
//! chdir, failures that are not refusals) and fork/exit.

use serde::{Deserialize, Serialize};

/// `[audit] files`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesLevel {
    /// Only refusals.
    Denied,
    /// Everything while a tool call is in flight, refusals always: what a
    /// call touched stays answerable, a runtime loading itself at start
    /// is not recorded.
    #[default]
    Calls,
    /// Everything, always (investigations, and `mcpguard policy learn`,
    /// which needs every open).
    All,
}

impl FilesLevel {
    /// Whether allowed file activity (anything but a refusal, which every
    /// level records) is recorded now; `in_call`: a tool call is in
    /// flight. The kernel programs' rule, for records written in user
    /// space (the persistence fence's).
    pub fn records_allowed(self, in_call: bool) -> bool {
        match self {
            FilesLevel::Denied => false,
            FilesLevel::Calls => in_call,
            FilesLevel::All => true,
        }
    }
}

/// The `[audit]` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    #[serde(default)]
    pub files: FilesLevel,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::Policy;

    fn parse(text: &str) -> Result<Policy, String> {
        Policy::parse(text, Path::new("p.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn files_defaults_to_calls_and_takes_the_three_levels() {
        assert_eq!(
            parse("name = \"x\"\n").unwrap().audit.files,
            FilesLevel::Calls
        );
        assert_eq!(
            parse("name = \"x\"\n[audit]\n").unwrap().audit.files,
            FilesLevel::Calls
        );
        for (text, level) in [
            ("denied", FilesLevel::Denied),
            ("calls", FilesLevel::Calls),
            ("all", FilesLevel::All),
        ] {
            let p = parse(&format!("name = \"x\"\n[audit]\nfiles = \"{text}\"\n")).unwrap();
            assert_eq!(p.audit.files, level);
        }
    }

    #[test]
    fn allowed_activity_is_recorded_at_all_or_in_a_call_at_calls() {
        let table = [
            (FilesLevel::Denied, [false, false]),
            (FilesLevel::Calls, [false, true]),
            (FilesLevel::All, [true, true]),
        ];
        for (level, want) in table {
            assert_eq!(
                [level.records_allowed(false), level.records_allowed(true)],
                want,
                "{level:?}"
            );
        }
    }

    #[test]
    fn an_unknown_level_names_the_place_and_the_levels() {
        let e = parse("name = \"x\"\n[audit]\nfiles = \"some\"\n").unwrap_err();
        assert!(e.starts_with("p.toml:3:9:"), "{e}");
        for want in ["`some`", "`denied`", "`calls`", "`all`"] {
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let e = parse("name = \"x\"\n[audit]\nopens = \"all\"\n").unwrap_err();
        assert!(e.starts_with("p.toml:3:") && e.contains("opens"), "{e}");
    }
}
