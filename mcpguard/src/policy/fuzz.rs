//! Fuzzing the policy parser: mutated real policies must parse or fail with
//! a located error, never panic or stall; a policy that parses must render
//! back to TOML that parses to the same policy, and compile to map entries.

use std::path::Path;

use toml::{map::Map, Value};

use super::{compile_allow, OnTaint, Policy, PolicyError, SecretSource, ToolChange};
use crate::fuzz::{self, Corpus};

const SEEDS: &[&[u8]] = &[
    include_bytes!("../../../policies/everything.toml"),
    include_bytes!("../../../policies/fetch.toml"),
    include_bytes!("../../../policies/filesystem.toml"),
    include_bytes!("../../../policies/git.toml"),
    include_bytes!("../../../policies/github.toml"),
    include_bytes!("../../../policies/memory.toml"),
    include_bytes!("../../../policies/postgres.toml"),
    include_bytes!("../../../policies/time.toml"),
    br#"name = "all-keys"
[filesystem]
read = ["/usr", "~/data"]
write = ["/dev/null"]
exec = ["/usr/bin"]
allow_persistence = ["git_hooks", "mcp_config"]
[network]
allow = ["10.0.0.0/8:443", "[::1]:8080-8090", "api.example.com:443", "*.example.org:80", "*:53"]
bind = ["8000", "9000-9010"]
unix = ["/run/user/%u/bus", "~/.sock"]
sockets = ["raw", "icmp", "netlink_sock_diag", "packet"]
allow_local_answers = true
[kernel]
allow = ["io_uring", "namespaces"]
[limits]
pids = 64
memory = "512M"
[env]
pass = ["PATH", "HOME"]
[tools]
allow = ["get_*", "read_?"]
deny = ["delete_*"]
log_args = ["path"]
on_tool_change = "block"
strip_invisible = true
ask = ["delete_*"]
ask_timeout = 30
on_taint = "deny"
taint_tools = ["send_*"]
[identity]
groups = ["docker"]
[secrets]
API_TOKEN = { file = "/etc/mcpguard/secrets/token" }
DB_PASSWORD = { credential = "db.password" }
GITHUB_TOKEN = { mint = "github-app", ttl = "30m" }
[tools.fetch]
network = ["*:443", "10.0.0.0/8:80", "api.example.com:8443"]
"#,
];

const DICT: &[&[u8]] = &[
    b"name = ",
    b"\n[filesystem]\n",
    b"\n[network]\n",
    b"\n[tools]\n",
    b"\n[tools.fetch]\nnetwork = [",
    b"\n[secrets]\n",
    b"\n[env]\n",
    b"\n[identity]\n",
    b"\n[kernel]\n",
    b"\n[limits]\n",
    b"pids = ",
    b"memory = \"",
    b"\"memfd_exec\"",
    b"allow_persistence = [\"git_config\"]",
    b"read = [",
    b"allow = [",
    b"bind = [",
    b"unix = [",
    b"sockets = [\"raw\"]",
    b"on_tool_change = \"block\"",
    b"ask = [\"*\"]",
    b"ask_timeout = ",
    b"on_taint = \"warn\"",
    b"\"~/",
    b"\"~root/",
    b"/../",
    b"\"/\"",
    b"\\u0000",
    b"\"[::ffff:1.2.3.4/120]:1-65535\"",
    b"\"0.0.0.0/0:0\"",
    b"\"*.:443\"",
    b"\"*:65536\"",
    b":65535",
    b"/129",
    b"-0",
    b"X = { file = \"/etc/x\", credential = \"y\" }",
    b"\xc3\xa9",
    b"\xe2\x80\xae",
    b"'''",
    b"\"\"\"",
    b"[[x]]",
    b"= inf",
    b"1979-05-27T07:32:00Z",
];

/// The policy as TOML again, through the `toml` crate's own writer (not
/// [`super::write`]), so the round trip checks the parser against an
/// independent writer.
fn render(p: &Policy) -> String {
    let table = |pairs: Vec<(&str, Value)>| {
        Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    };
    let mut root = Map::new();
    root.insert("name".into(), Value::String(p.name.clone()));
    root.insert("filesystem".into(), filesystem(p));
    let permit = |p: super::mcp::Permit| {
        Value::String(
            match p {
                super::mcp::Permit::Allow => "allow",
                super::mcp::Permit::Deny => "deny",
            }
            .into(),
        )
    };
    root.insert(
        "mcp".into(),
        table(vec![
            ("sampling", permit(p.mcp.sampling)),
            ("elicitation", permit(p.mcp.elicitation)),
        ]),
    );
    root.insert("network".into(), network(p));
    root.insert("env".into(), table(vec![("pass", list(&p.env.pass))]));
    root.insert("tools".into(), tools(p));
    let kernel: Vec<String> = p.kernel.allow.iter().map(ToString::to_string).collect();
    root.insert("kernel".into(), table(vec![("allow", list(&kernel))]));
    let memory = super::limits::show_size(p.limits.memory);
    root.insert(
        "limits".into(),
        table(vec![
            ("pids", Value::Integer(p.limits.pids as i64)),
            ("memory", Value::String(memory)),
        ]),
    );
    root.insert(
        "identity".into(),
        table(vec![("groups", list(&p.identity.groups))]),
    );
    root.insert("secrets".into(), secrets(p));
    root.insert("command".into(), command(p));
    toml::to_string(&Value::Table(root)).expect("a policy renders as TOML")
}

fn list(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

fn filesystem(p: &Policy) -> Value {
    let mut fs = Map::new();
    fs.insert("read".into(), list(&p.filesystem.read));
    fs.insert("write".into(), list(&p.filesystem.write));
    fs.insert("exec".into(), list(&p.filesystem.exec));
    fs.insert("baseline".into(), Value::Boolean(p.filesystem.baseline));
    let persistence: Vec<String> = (p.filesystem.allow_persistence.iter())
        .map(ToString::to_string)
        .collect();
    fs.insert("allow_persistence".into(), list(&persistence));
    Value::Table(fs)
}

fn network(p: &Policy) -> Value {
    let mut net = Map::new();
    let allow: Vec<String> = (p.network.allow.iter().map(|r| r.text.clone()))
        .chain(p.network.hosts.iter().map(|h| h.text.clone()))
        .collect();
    net.insert("allow".into(), list(&allow));
    let bind: Vec<String> = p.network.bind.iter().map(ToString::to_string).collect();
    net.insert("bind".into(), list(&bind));
    net.insert("unix".into(), list(&p.network.unix));
    let sockets: Vec<String> = p.network.sockets.iter().map(ToString::to_string).collect();
    net.insert("sockets".into(), list(&sockets));
    net.insert(
        "allow_local_answers".into(),
        Value::Boolean(p.network.allow_local_answers),
    );
    net.insert(
        "min_ttl".into(),
        Value::Integer(i64::from(p.network.min_ttl)),
    );
    Value::Table(net)
}

fn tools(p: &Policy) -> Value {
    let mut tools = Map::new();
    if let Some(allow) = &p.tools.allow {
        tools.insert("allow".into(), list(allow));
    }
    tools.insert("deny".into(), list(&p.tools.deny));
    tools.insert("log_args".into(), list(&p.tools.log_args));
    tools.insert("excerpt".into(), list(&p.tools.excerpt));
    let change = match p.tools.on_tool_change {
        ToolChange::Warn => "warn",
        ToolChange::Block => "block",
    };
    tools.insert("on_tool_change".into(), Value::String(change.into()));
    tools.insert(
        "strip_invisible".into(),
        Value::Boolean(p.tools.strip_invisible),
    );
    tools.insert("ask".into(), list(&p.tools.ask));
    let timeout = i64::try_from(p.tools.ask_timeout.as_secs()).expect("bounded by the parser");
    tools.insert("ask_timeout".into(), Value::Integer(timeout));
    let on_taint = match p.tools.on_taint {
        OnTaint::Ask => "ask",
        OnTaint::Deny => "deny",
        OnTaint::Warn => "warn",
    };
    tools.insert("on_taint".into(), Value::String(on_taint.into()));
    if let Some(taint_tools) = &p.tools.taint_tools {
        tools.insert("taint_tools".into(), list(taint_tools));
    }
    for tool in p.tools.call_net.tools() {
        let rules = p.tools.call_net.get(tool).map(|r| r.texts());
        let mut table = Map::new();
        table.insert("network".into(), list(&rules.unwrap_or_default()));
        tools.insert(tool.into(), Value::Table(table));
    }
    Value::Table(tools)
}

fn secrets(p: &Policy) -> Value {
    let mut secrets = Map::new();
    for s in &p.secrets {
        let mut source = Map::new();
        match &s.source {
            SecretSource::File(f) => {
                source.insert("file".into(), Value::String(f.display().to_string()))
            }
            SecretSource::Credential(c) => {
                source.insert("credential".into(), Value::String(c.clone()))
            }
            SecretSource::Mint { helper, ttl_secs } => {
                source.insert("ttl".into(), Value::String(format!("{ttl_secs}s")));
                source.insert("mint".into(), Value::String(helper.clone()))
            }
        };
        secrets.insert(s.env.clone(), Value::Table(source));
    }
    Value::Table(secrets)
}

fn command(p: &Policy) -> Value {
    let mut command = Map::new();
    command.insert("fits".into(), list(&p.command.fits));
    if let Some(pin) = &p.command.pin {
        command.insert("runner".into(), list(&pin.runner));
        command.insert("run".into(), list(&pin.run));
        for (key, value) in [("package", &pin.package), ("integrity", &pin.integrity)] {
            if let Some(v) = value {
                command.insert(key.into(), Value::String(v.clone()));
            }
        }
    }
    Value::Table(command)
}

fn check(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let source = Path::new("fuzz.toml");
    match Policy::parse(text, source) {
        Ok(policy) => {
            let again = render(&policy);
            let reparsed = Policy::parse(&again, source)
                .unwrap_or_else(|e| panic!("a parsed policy does not re-validate: {e}\n{again}"));
            assert_eq!(
                reparsed, policy,
                "the round trip changed the policy:\n{again}"
            );
            compile_allow(&policy.network.allow, 1)
                .unwrap_or_else(|e| panic!("a parsed policy does not compile: {e}"));
        }
        Err(
            e @ (PolicyError::Syntax { .. }
            | PolicyError::Invalid { .. }
            | PolicyError::UnknownToolsKey { .. }
            | PolicyError::ToolNetwork { .. }),
        ) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("fuzz.toml:"),
                "an error without a location: {msg}"
            );
        }
        Err(e) => panic!("parse gave an error only file reads give: {e}"),
    }
}

#[test]
fn policy_parser_survives_mutated_policies() {
    let corpus = Corpus::new(SEEDS, DICT);
    for seed in &corpus.seeds {
        let text = std::str::from_utf8(seed).unwrap();
        Policy::parse(text, Path::new("seed.toml")).expect("seed policies parse");
        check(seed);
    }
    let n = fuzz::run("policy", |rng| corpus.mutant(rng), check);
    assert!(n > 0);
}
