//! `[tools.<name>] network`: parsing next to `[tools]`' own keys, located
//! errors, and the union of in-flight tools' rules.

use std::path::Path;

use super::*;
use crate::policy::Policy;

const FILE: &str = "policies/x.toml";

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, Path::new(FILE))
}

/// The policy's own located-error check (`file:line:col: ...`).
fn err_at(text: &str, line: usize, col: usize, parts: &[&str]) {
    crate::policy::tests::assert_err(text, line, col, parts);
}

const FETCH: &str = r#"name = "f"
[network]
allow = ["pypi.org:443"]
[tools]
deny = ["delete_*"]
strip_invisible = true
[tools.fetch]
network = ["*:443", "example.com:80", "10.0.0.0/8:443"]
[tools."get page"]
network = ["10.0.0.0/8:443", "192.0.2.1:8080"]
[tools.quiet]
"#;

#[test]
fn tool_tables_sit_next_to_the_keys_of_tools() {
    let p = parse(FETCH).unwrap();
    assert_eq!(p.tools.deny, ["delete_*"]);
    assert!(p.tools.strip_invisible);
    let net = &p.tools.call_net;
    // A table without rules opens nothing and is not kept.
    assert_eq!(net.tools().collect::<Vec<_>>(), ["fetch", "get page"]);
    let fetch = net.get("fetch").unwrap();
    assert_eq!(fetch.texts(), ["10.0.0.0/8:443", "*:443", "example.com:80"]);
    assert_eq!(fetch.allow[0].prefix, 96 + 8);
    assert!(fetch.hosts[0].matches("anything.example.org"));
    assert!(net.get("quiet").is_none() && net.get("fet").is_none());
    // Startup rules stay where they were.
    assert_eq!(p.network.hosts.len(), 1);
    assert!(p.network.allow.is_empty());
}

#[test]
fn a_policy_without_tool_tables_has_no_per_call_rules() {
    let p = parse("name = \"f\"\n[tools]\ndeny = [\"x\"]\n").unwrap();
    assert!(p.tools.call_net.is_empty());
}

#[test]
fn the_union_holds_each_rule_once_and_only_of_the_tools_named() {
    let net = parse(FETCH).unwrap().tools.call_net;
    let both = net.union(["fetch", "get page", "fetch", "echo"]);
    assert_eq!(
        both.texts(),
        [
            "10.0.0.0/8:443",
            "192.0.2.1:8080",
            "*:443",
            "example.com:80"
        ]
    );
    assert_eq!(net.union(["get page"]).allow.len(), 2);
    assert!(net.union(["echo"]).is_empty());
    assert!(net.union([]).is_empty());
}

#[test]
fn a_key_of_tools_that_is_no_table_and_not_its_own_is_refused_where_it_is() {
    err_at(
        "name = \"f\"\n[tools]\ndeny = []\nalow = [\"x\"]\n",
        4,
        1,
        &["unknown key `alow` in [tools]"],
    );
}

#[test]
fn a_tool_table_takes_only_network() {
    err_at(
        "name = \"f\"\n[tools.fetch]\nnetwrk = [\"*:443\"]\n",
        3,
        1,
        &["netwrk"],
    );
}

#[test]
fn a_bad_rule_names_its_tool_and_its_place() {
    err_at(
        "name = \"f\"\n[tools.fetch]\nnetwork = [\"*:443\", \"10.0.0.1\"]\n",
        3,
        21,
        &["tools.fetch.network \"10.0.0.1\"", "no port"],
    );
    err_at(
        "name = \"f\"\n[tools.fetch]\nnetwork = [\"bad_host!:80\"]\n",
        3,
        12,
        &["tools.fetch.network"],
    );
}

#[test]
fn tool_names_are_exact() {
    err_at(
        "name = \"f\"\n[tools.\"fetch_*\"]\nnetwork = [\"*:443\"]\n",
        2,
        8,
        &["tools.fetch_*.network", "one tool exactly"],
    );
}

#[test]
fn a_tools_rules_must_fold_with_the_startup_ones() {
    // Each rule alone fits; with the startup /8's ports folded into the
    // tool's /16 there are more ranges than one entry holds.
    let startup: Vec<String> = (0..mcpguard_common::limits::PORT_RANGES)
        .map(|i| format!("\"10.0.0.0/8:{}\"", 100 + 2 * i))
        .collect();
    let text = format!(
        "name = \"f\"\n[network]\nallow = [{}]\n[tools.fetch]\nnetwork = [\"10.1.0.0/16:9000\"]\n",
        startup.join(", ")
    );
    err_at(&text, 5, 12, &["tools.fetch.network", "port ranges"]);
}

#[test]
fn the_keys_of_tools_keep_their_places_next_to_tool_tables() {
    err_at(
        "name = \"f\"\n[tools]\ndeny = [\"ok\", \"\"]\n[tools.fetch]\nnetwork = [\"*:443\"]\n",
        3,
        15,
        &["tools.deny"],
    );
}
