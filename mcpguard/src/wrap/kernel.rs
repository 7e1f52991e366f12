//! The guarantees this kernel cannot hold, as `wrap` and `update` meet
//! them. The daemon refuses to launch a policy that does not accept them
//! (`[kernel] accept_weaker`), so the policies wrap writes (starters, and
//! the ones guarded installs run under) accept them only when the user
//! said so (`--accept-weaker`); otherwise wrap stops before it changes
//! anything, instead of leaving configs whose every server is refused.

use crate::kernel::coverage::{self, Class, Facts};

/// The kernel lacks guarantees the user has not accepted.
#[derive(Debug, thiserror::Error)]
#[error(
    "this kernel's Landlock (ABI {abi}) cannot hold {classes}: the daemon refuses to launch \
     servers, and the guarded installs wrap runs, whose policy does not accept that. Run \
     again with --accept-weaker to write `[kernel] accept_weaker` into the policies wrap \
     writes (a policy you wrote needs the line by hand), or boot Linux 6.12 or later. \
     Nothing was changed"
)]
pub struct KernelLacks {
    abi: u32,
    classes: String,
}

/// The classes the policies wrap writes must accept on a kernel with
/// Landlock ABI `abi` (`None`: no Landlock, which the daemon refuses on
/// its own). Errors when there are some and `accept` is false.
pub fn gate(abi: Option<u32>, accept: bool) -> Result<Vec<Class>, KernelLacks> {
    let Some(abi) = abi else {
        return Ok(Vec::new());
    };
    let facts = Facts {
        landlock_abi: Some(abi),
        ebpf_network: true,
    };
    let lacking = coverage::unaccepted(&coverage::table(facts), &[]);
    if lacking.is_empty() || accept {
        return Ok(lacking);
    }
    Err(KernelLacks {
        abi,
        classes: names(&lacking, ", "),
    })
}

/// The `[kernel]` table accepting `classes`, with why; empty for none.
pub fn section(classes: &[Class]) -> String {
    if classes.is_empty() {
        return String::new();
    }
    format!(
        "\n[kernel]\n# This kernel's Landlock cannot hold these, and `mcpguard wrap \
         --accept-weaker` accepted\n# running without them (README: \"Guarantees that \
         depend on the Landlock ABI\").\n# On Linux 6.12 or later, remove this table.\n\
         accept_weaker = [{}]\n",
        names(classes, ", ")
    )
}

fn names(classes: &[Class], sep: &str) -> String {
    classes
        .iter()
        .map(|c| format!("\"{}\"", c.name()))
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn a_kernel_holding_every_scope_needs_nothing() {
        assert!(gate(Some(6), false).unwrap().is_empty());
        assert!(gate(Some(7), true).unwrap().is_empty());
        assert!(gate(None, false).unwrap().is_empty());
        assert_eq!(section(&[]), "");
    }

    #[test]
    fn an_older_kernel_stops_wrap_unless_the_user_accepts() {
        let err = gate(Some(2), false).unwrap_err().to_string();
        assert!(err.contains("Landlock (ABI 2)"), "{err}");
        assert!(err.contains("scope.signal"), "{err}");
        assert!(err.contains("scope.abstract_unix_socket"), "{err}");
        assert!(err.contains("--accept-weaker"), "{err}");
        let accepted = gate(Some(4), true).unwrap();
        assert_eq!(
            accepted,
            vec![Class::ScopeAbstractUnixSocket, Class::ScopeSignal]
        );
    }

    #[test]
    fn the_section_parses_as_the_policy_s_accept_weaker() {
        let accepted = gate(Some(2), true).unwrap();
        let text = format!("name = \"x\"\n{}", section(&accepted));
        let policy = Policy::parse(&text, std::path::Path::new("x.toml")).unwrap();
        assert_eq!(policy.kernel.accept_weaker, accepted);
    }
}
