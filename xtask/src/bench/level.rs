//! The audit level the issue 15 sections ([`super::landlock`],
//! [`super::volume`]) run their guarded servers at: the policy's
//! `[audit] files` key, written into a policy only when this build's
//! policy parser accepts it (asked once, by `mcpguard policy check` on a
//! probe policy), so the sections run on builds with and without the key
//! and the report says which level was in force.

use std::path::Path;

use anyhow::{bail, Result};

use super::{stdout_of, Ctx};

/// The `[audit]` table's key and the level the sections ask for: issue
/// 15's default, allowed file activity recorded only while a tool call is
/// in flight (denials, execs and network decisions always).
const KEY: &str = "files";
const LEVEL: &str = "calls";

/// Which audit level the guarded runs had.
pub struct Level {
    /// Whether policies carry `[audit] files = "calls"`.
    pub table: bool,
}

impl Level {
    /// Ask this build's `mcpguard policy check` whether it knows the key.
    /// A refusal of the `[audit]` table itself means the build predates
    /// it; any other refusal (a key or level this build names otherwise)
    /// fails the section, so a renamed key is fixed here, not measured at
    /// the wrong level.
    pub fn detect(ctx: &Ctx) -> Result<Level> {
        let probe = ctx.policy("level-probe", &[], &[], &table_text())?;
        let mut check = std::process::Command::new(&ctx.mcpguard);
        check.args(["policy", "check"]).arg(&probe);
        match stdout_of(&mut check) {
            Ok(_) => Ok(Level { table: true }),
            Err(e) if format!("{e:#}").contains("unknown field `audit`") => {
                Ok(Level { table: false })
            }
            Err(e) => bail!("checking the probe policy {}: {e:#}", probe.display()),
        }
    }

    /// The policy text to append (a table of its own), or nothing.
    pub fn tail(&self) -> String {
        if self.table {
            table_text()
        } else {
            String::new()
        }
    }

    /// Set the key in a parsed policy, where the build knows it.
    pub fn apply(&self, policy: &mut toml::Table) {
        if self.table {
            let mut audit = toml::Table::new();
            audit.insert(KEY.into(), LEVEL.into());
            policy.insert("audit".into(), audit.into());
        }
    }

    /// For the report.
    pub fn describe(&self) -> String {
        if self.table {
            format!("`[audit] {KEY} = \"{LEVEL}\"` (issue 15's default level)")
        } else {
            "this build's only level (its policies have no `[audit]` table: every open, exec, fork and connect is recorded)".into()
        }
    }

    /// For report.json.
    pub fn json(&self) -> serde_json::Value {
        if self.table {
            serde_json::json!({ KEY: LEVEL })
        } else {
            serde_json::json!(null)
        }
    }
}

fn table_text() -> String {
    format!("\n[audit]\n{KEY} = \"{LEVEL}\"\n")
}

/// A policy `text` (TOML) edited by `edit`, written to `path` for the
/// test user to read.
pub fn write_edited(
    path: &Path,
    text: &str,
    edit: impl FnOnce(&mut toml::Table),
) -> Result<std::path::PathBuf> {
    let mut table: toml::Table = text.parse()?;
    edit(&mut table);
    super::write_file(path, &toml::to_string(&table)?, 0o644)?;
    Ok(path.to_path_buf())
}
