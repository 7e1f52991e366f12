//! Persistence paths: names inside a granted write tree that make code run
//! later, outside the guard (`[filesystem] allow_persistence`).
//!
//! A server with write access to a project can leave code for someone else
//! to run: git runs `.git/hooks/*` and whatever `.git/config` names
//! (`core.hooksPath`, `core.fsmonitor`, `core.sshCommand`, `!` aliases,
//! filter drivers) on the user's next `git commit`; editors run
//! `.vscode/tasks.json` (on folder open, `runOn: folderOpen`) and
//! `.idea` run configurations; direnv sources `.envrc` on `cd`; MCP clients
//! start the servers `.mcp.json`, `.cursor/` and `.claude/` name (and
//! `.claude/settings.json` holds hooks). Each [`PersistKind`] is one such
//! family, named in a policy to let the server write it. The launcher
//! binds what exists of them read-only ([`crate::launch::persist`]); the
//! daemon classifies every write-intent record with [`classify`] and writes
//! a `persist` record for each hit.
//!
//! Left out on purpose: `.gitattributes` and `.gitmodules` only select
//! drivers and URLs that `.git/config` must define (git ignores
//! `update = !cmd` from `.gitmodules`); `.env` files are data that
//! programs read, not code a tool runs by itself; build files
//! (`Makefile`, `package.json` scripts) run only when the user builds,
//! which is what a granted project is for.

use std::{
    ffi::OsStr,
    path::{Component, Path},
};

use serde::{Deserialize, Serialize};

/// One family of persistence paths (`[filesystem] allow_persistence`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistKind {
    /// `.git/hooks/` (any file below it), the directory `core.hooksPath`
    /// names, and the hook managers' files: `.husky/` and
    /// `.pre-commit-config.yaml` (whose `local` hooks run any command).
    GitHooks,
    /// `.git/config` and `.git/config.worktree`, and a `.git` that is a
    /// file (a gitfile naming another git directory).
    GitConfig,
    /// `.vscode/` (tasks, launch configurations, settings, `mcp.json`).
    Vscode,
    /// `.idea/` (JetBrains run configurations and workspace settings).
    Idea,
    /// `.envrc` (direnv).
    Direnv,
    /// `.mcp.json`, `.cursor/` and `.claude/` (MCP client configurations
    /// and agent hooks).
    McpConfig,
}

/// Every kind, for messages and the launcher's search.
pub const ALL: &[PersistKind] = &[
    PersistKind::GitHooks,
    PersistKind::GitConfig,
    PersistKind::Vscode,
    PersistKind::Idea,
    PersistKind::Direnv,
    PersistKind::McpConfig,
];

impl PersistKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHooks => "git_hooks",
            Self::GitConfig => "git_config",
            Self::Vscode => "vscode",
            Self::Idea => "idea",
            Self::Direnv => "direnv",
            Self::McpConfig => "mcp_config",
        }
    }

    /// The kind of a directory entry named `name`, other than `.git`
    /// (whose kinds lie inside it): the whole entry is that family's.
    pub fn of_entry(name: &OsStr) -> Option<PersistKind> {
        match name.as_encoded_bytes() {
            b".husky" | b".pre-commit-config.yaml" => Some(Self::GitHooks),
            b".vscode" => Some(Self::Vscode),
            b".idea" => Some(Self::Idea),
            b".envrc" => Some(Self::Direnv),
            b".mcp.json" | b".cursor" | b".claude" => Some(Self::McpConfig),
            _ => None,
        }
    }
}

impl std::fmt::Display for PersistKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The persistence family `path` belongs to, judged by its components (no
/// filesystem access: the daemon calls this for paths as a server passed
/// them, resolved against its working directory).
pub fn classify(path: &Path) -> Option<PersistKind> {
    let names: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for (i, name) in names.iter().enumerate() {
        if let Some(kind) = PersistKind::of_entry(name) {
            return Some(kind);
        }
        if name.as_encoded_bytes() != b".git" {
            continue;
        }
        return match names.get(i + 1).map(|n| n.as_encoded_bytes()) {
            // `.git` itself: made, renamed or removed whole, or written as
            // a gitfile.
            None => Some(PersistKind::GitConfig),
            Some(b"hooks") => Some(PersistKind::GitHooks),
            Some(b"config" | b"config.worktree") if i + 2 == names.len() => {
                Some(PersistKind::GitConfig)
            }
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_components() {
        let k = |p: &str| classify(Path::new(p));
        assert_eq!(k("/p/.git/hooks/post-commit"), Some(PersistKind::GitHooks));
        assert_eq!(k("/p/.git/hooks"), Some(PersistKind::GitHooks));
        assert_eq!(k("/p/.husky/pre-commit"), Some(PersistKind::GitHooks));
        assert_eq!(k("/p/.pre-commit-config.yaml"), Some(PersistKind::GitHooks));
        assert_eq!(k("/p/.git/config"), Some(PersistKind::GitConfig));
        assert_eq!(k("sub/.git"), Some(PersistKind::GitConfig));
        assert_eq!(k("/p/.git/config.worktree"), Some(PersistKind::GitConfig));
        assert_eq!(k("/p/.git/objects/ab/cdef"), None);
        assert_eq!(k("/p/.git/config/x"), None);
        assert_eq!(k("/p/.git/index"), None);
        assert_eq!(k("/p/.vscode/tasks.json"), Some(PersistKind::Vscode));
        assert_eq!(k("/p/.idea/workspace.xml"), Some(PersistKind::Idea));
        assert_eq!(k("/p/a/.envrc"), Some(PersistKind::Direnv));
        assert_eq!(k(".mcp.json"), Some(PersistKind::McpConfig));
        assert_eq!(k("/p/.claude/settings.json"), Some(PersistKind::McpConfig));
        assert_eq!(k("/p/.cursor/mcp.json"), Some(PersistKind::McpConfig));
        assert_eq!(k("/p/envrc"), None);
        assert_eq!(k("/p/.envrc.bak"), None);
        assert_eq!(k("/p/src/main.rs"), None);
    }

    #[test]
    fn names_round_trip_through_serde() {
        for kind in ALL {
            let v = toml::Value::try_from(kind).unwrap();
            assert_eq!(v.as_str(), Some(kind.as_str()));
            assert_eq!(&v.try_into::<PersistKind>().unwrap(), kind);
        }
    }
}
