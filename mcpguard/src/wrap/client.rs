//! The MCP client config formats `wrap` knows: which file names belong to
//! which client, and where in each file the server entries live.

use std::{fmt, path::Path, str::FromStr};

use super::json::{Node, Syntax};

/// An MCP client whose config file `wrap` can rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `claude_desktop_config.json`: servers under `mcpServers`.
    ClaudeDesktop,
    /// `.mcp.json` (project) and `~/.claude.json` (user): servers under
    /// `mcpServers`, and in `~/.claude.json` also under
    /// `projects.<path>.mcpServers`.
    ClaudeCode,
    /// `~/.cursor/mcp.json` or a project's `.cursor/mcp.json`: servers under
    /// `mcpServers`.
    Cursor,
    /// `.vscode/mcp.json`: servers under `servers`; the file is JSONC.
    VsCode,
}

/// The names `--client` accepts, in the order help text lists them.
pub const CLIENT_NAMES: &str = "claude-desktop, claude-code, cursor, vscode";

impl Client {
    /// The client a config file belongs to, judged by its name (and, for
    /// `mcp.json`, its directory), or `None` if the name says nothing.
    pub fn detect(path: &Path) -> Option<Client> {
        let name = path.file_name()?.to_str()?;
        match name {
            "claude_desktop_config.json" => Some(Client::ClaudeDesktop),
            ".mcp.json" | ".claude.json" => Some(Client::ClaudeCode),
            "mcp.json" => {
                let parent = path.parent()?.file_name()?.to_str()?;
                match parent {
                    ".cursor" => Some(Client::Cursor),
                    ".vscode" => Some(Client::VsCode),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Which JSON dialect the client itself reads.
    pub fn syntax(self) -> Syntax {
        match self {
            // VS Code reads its settings files, mcp.json included, as JSONC.
            Client::VsCode => Syntax::Jsonc,
            Client::ClaudeDesktop | Client::ClaudeCode | Client::Cursor => Syntax::Strict,
        }
    }

    /// Every table of server entries in `doc`, with a dotted path for
    /// messages. Missing tables are skipped; a table that is present but not
    /// an object is returned too, so the caller can report it.
    pub fn server_tables(self, doc: &Node) -> Vec<(String, &Node)> {
        let key = match self {
            Client::VsCode => "servers",
            Client::ClaudeDesktop | Client::ClaudeCode | Client::Cursor => "mcpServers",
        };
        let mut tables: Vec<(String, &Node)> = doc
            .get(key)
            .map(|t| (key.to_owned(), t))
            .into_iter()
            .collect();
        if self == Client::ClaudeCode {
            // ~/.claude.json keeps each project's local servers under the
            // project's absolute path.
            let projects = doc.get("projects").and_then(Node::as_object);
            for project in projects.unwrap_or_default() {
                if let Some(table) = project.value.get(key) {
                    tables.push((format!("projects.{:?}.{key}", project.key), table));
                }
            }
        }
        tables
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Client::ClaudeDesktop => "claude-desktop",
            Client::ClaudeCode => "claude-code",
            Client::Cursor => "cursor",
            Client::VsCode => "vscode",
        })
    }
}

/// `--client` names that are not one of [`CLIENT_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown client {0:?}: use one of {CLIENT_NAMES}")]
pub struct UnknownClientName(pub String);

impl FromStr for Client {
    type Err = UnknownClientName;

    fn from_str(s: &str) -> Result<Client, UnknownClientName> {
        match s {
            "claude-desktop" => Ok(Client::ClaudeDesktop),
            "claude-code" => Ok(Client::ClaudeCode),
            "cursor" => Ok(Client::Cursor),
            "vscode" => Ok(Client::VsCode),
            _ => Err(UnknownClientName(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_clients_from_file_names() {
        let cases = [
            (
                "/home/me/.config/Claude/claude_desktop_config.json",
                Some(Client::ClaudeDesktop),
            ),
            ("/src/app/.mcp.json", Some(Client::ClaudeCode)),
            ("/home/me/.claude.json", Some(Client::ClaudeCode)),
            ("/home/me/.cursor/mcp.json", Some(Client::Cursor)),
            ("/src/app/.vscode/mcp.json", Some(Client::VsCode)),
            ("mcp.json", None),
            ("/src/app/mcp.json", None),
            ("/tmp/config.json", None),
        ];
        for (path, want) in cases {
            assert_eq!(Client::detect(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn names_round_trip() {
        for c in [
            Client::ClaudeDesktop,
            Client::ClaudeCode,
            Client::Cursor,
            Client::VsCode,
        ] {
            assert_eq!(c.to_string().parse::<Client>(), Ok(c));
        }
        assert!("claude".parse::<Client>().is_err());
    }
}
