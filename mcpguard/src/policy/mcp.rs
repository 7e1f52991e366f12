//! `[mcp]`: what a server may ask of the client over the MCP session.
//!
//! Servers send the client requests of their own. `sampling/createMessage`
//! puts server-written text into the model's context (an injection
//! channel); `elicitation/create` puts a server-written form in front of the
//! user (a phishing channel: "paste your AWS key"). Both are refused unless
//! the policy allows them: few servers need them, and one that does says
//! so in one line. Every other request (`roots/list`, `ping`) passes. All
//! are recorded by the tap whatever the verdict.

use serde::Deserialize;

/// Whether a kind of server request reaches the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permit {
    Allow,
    /// Answered by the daemon with a JSON-RPC error; the client never sees
    /// the request.
    #[default]
    Deny,
}

/// The `[mcp]` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mcp {
    /// `sampling/createMessage`.
    #[serde(default)]
    pub sampling: Permit,
    /// `elicitation/create`.
    #[serde(default)]
    pub elicitation: Permit,
}

impl Mcp {
    /// Learning enforces nothing, this included.
    pub fn allow_all() -> Mcp {
        Mcp {
            sampling: Permit::Allow,
            elicitation: Permit::Allow,
        }
    }

    /// The verdict on a server request's method, and the policy key that
    /// decided it; `None` for methods the policy does not judge.
    pub fn judge(&self, method: &str) -> Option<(Permit, &'static str)> {
        match method {
            "sampling/createMessage" => Some((self.sampling, "sampling")),
            "elicitation/create" => Some((self.elicitation, "elicitation")),
            _ => None,
        }
    }
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
    fn sampling_and_elicitation_are_refused_unless_allowed() {
        let bare = parse("name = \"x\"\n").unwrap();
        assert_eq!(bare.mcp, Mcp::default());
        assert_eq!(
            bare.mcp.judge("sampling/createMessage"),
            Some((Permit::Deny, "sampling"))
        );
        assert_eq!(
            bare.mcp.judge("elicitation/create"),
            Some((Permit::Deny, "elicitation"))
        );
        assert_eq!(bare.mcp.judge("roots/list"), None);
        let p = parse("name = \"x\"\n[mcp]\nsampling = \"allow\"\n").unwrap();
        assert_eq!(p.mcp.sampling, Permit::Allow);
        assert_eq!(p.mcp.elicitation, Permit::Deny);
    }

    #[test]
    fn bad_values_and_keys_name_the_place() {
        let e = parse("name = \"x\"\n[mcp]\nsampling = \"ask\"\n").unwrap_err();
        assert!(e.starts_with("p.toml:3:"), "{e}");
        let e = parse("name = \"x\"\n[mcp]\nroots = \"deny\"\n").unwrap_err();
        assert!(e.starts_with("p.toml:3:") && e.contains("roots"), "{e}");
    }
}
