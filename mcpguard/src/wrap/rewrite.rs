//! The text transformation behind `wrap` and `unwrap`, with no file system
//! access: config text in, config text and a per-server report out.
//!
//! Both directions edit only the few values they must (a server's `command`
//! and the front of its `args`) in place, and copy every other byte. `wrap`
//! moves the original command token, as written, into `args`, and lays out
//! what it inserts the way the neighbouring array elements are laid out, so
//! `unwrap` can cut the same bytes out again: unwrapping a wrapped file gives
//! back the original byte for byte.

use std::{ops::Range, path::Path};

use super::{
    client::Client,
    json::{self, Member, Node},
    starter, WrapError,
};

/// What `wrap` writes into each stdio server entry.
#[derive(Debug, Clone)]
pub struct WrapOptions {
    /// The mcpguard binary, written as each entry's `command`.
    pub mcpguard: String,
    /// When set, `--policy` names the policy file `<dir>/<policy>.toml`
    /// rather than the policy's name, because `mcpguard run` would not find
    /// it by name (the directory is not one it searches).
    pub policy_dir_arg: Option<String>,
}

/// The result of rewriting one file's text.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub text: String,
    /// Every server entry found, in document order.
    pub servers: Vec<Server>,
}

/// One server entry and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Where its table is, e.g. `mcpServers` or
    /// `projects."/home/me/app".mcpServers`.
    pub table: String,
    /// Its key in the table.
    pub name: String,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `wrap` routed it through mcpguard.
    Wrapped {
        /// The policy name derived from the server's key.
        policy: String,
        /// The original command and arguments.
        command: String,
        args: Vec<String>,
        /// The variables the entry's `env` sets (name, value; a value that
        /// is not a string reads as empty).
        env: Vec<(String, String)>,
    },
    /// `wrap`: it already runs through mcpguard.
    AlreadyWrapped,
    /// `unwrap` restored its own command.
    Unwrapped,
    /// `unwrap`: it does not run through mcpguard.
    NotWrapped,
    /// `unwrap`: it runs mcpguard, but not as `run ... -- COMMAND ...`.
    UnknownWrapping,
    /// A server reached by URL: nothing to wrap.
    Remote,
    /// Neither `command` nor `url`.
    NoCommand,
}

/// Transport types that mean the client connects to a URL instead of
/// starting a process.
const REMOTE_TYPES: &[&str] = &["http", "sse", "streamable-http", "streamableHttp", "ws"];

/// Routes every stdio server in `text` through mcpguard.
pub fn wrap(
    text: &str,
    client: Client,
    opts: &WrapOptions,
    path: &Path,
) -> Result<Rewrite, WrapError> {
    rewrite(text, client, path, |entry, at| {
        wrap_entry(text, entry, at, opts, path)
    })
}

/// Gives every server that runs through mcpguard its own command back.
/// `mcpguard` is this binary's path, recognised in addition to any command
/// named `mcpguard`.
pub fn unwrap(
    text: &str,
    client: Client,
    mcpguard: &str,
    path: &Path,
) -> Result<Rewrite, WrapError> {
    rewrite(text, client, path, |entry, at| {
        unwrap_entry(text, entry, at, mcpguard, path)
    })
}

type Edit = (Range<usize>, String);

fn rewrite(
    text: &str,
    client: Client,
    path: &Path,
    mut per_entry: impl FnMut(&Member, &str) -> Result<(Action, Vec<Edit>), WrapError>,
) -> Result<Rewrite, WrapError> {
    let doc = json::parse(text, client.syntax()).map_err(|e| {
        let (line, col) = e.line_col(text);
        WrapError::Json {
            path: path.to_owned(),
            line,
            col,
            message: e.message,
        }
    })?;
    let mut servers = Vec::new();
    let mut edits = Vec::new();
    for (table_at, table) in client.server_tables(&doc) {
        let entries = table.as_object().ok_or_else(|| WrapError::NotAnObject {
            path: path.to_owned(),
            at: table_at.clone(),
            what: "the server table",
        })?;
        for entry in entries {
            let at = format!("{table_at}.{:?}", entry.key);
            let (action, entry_edits) = per_entry(entry, &at)?;
            edits.extend(entry_edits);
            servers.push(Server {
                table: table_at.clone(),
                name: entry.key.clone(),
                action,
            });
        }
    }
    Ok(Rewrite {
        text: apply(text, edits),
        servers,
    })
}

/// Applies non-overlapping edits (ranges of `text` and their replacements).
fn apply(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|(range, _)| (range.start, range.end));
    let mut out = String::with_capacity(text.len() + edits.len() * 64);
    let mut copied = 0;
    for (range, replacement) in edits {
        // Edits come from disjoint members of one entry, or from different
        // entries; an overlap would be a bug here, never the input's fault.
        debug_assert!(range.start >= copied, "overlapping edits");
        out.push_str(&text[copied..range.start.max(copied)]);
        out.push_str(&replacement);
        copied = range.end.max(copied);
    }
    out.push_str(&text[copied..]);
    out
}

/// The parts of a server entry both directions look at.
struct Entry<'a> {
    command: &'a Member,
    command_str: &'a str,
    /// The `args` member and its elements (all strings).
    args: Option<(&'a Member, &'a [Node])>,
}

/// Checks the entry's shape. `Ok(Err(action))` means there is no process to
/// wrap or unwrap.
fn inspect<'a>(
    entry: &'a Member,
    at: &str,
    path: &Path,
) -> Result<Result<Entry<'a>, Action>, WrapError> {
    let node = &entry.value;
    if node.as_object().is_none() {
        return Err(WrapError::NotAnObject {
            path: path.to_owned(),
            at: at.to_owned(),
            what: "a server entry",
        });
    }
    let transport = node.get("type").and_then(Node::as_str);
    if transport.is_some_and(|t| REMOTE_TYPES.contains(&t)) {
        return Ok(Err(Action::Remote));
    }
    let Some(command) = node.member("command") else {
        let action = if node.get("url").is_some() {
            Action::Remote
        } else {
            Action::NoCommand
        };
        return Ok(Err(action));
    };
    let bad = |field: &'static str, expected: &'static str| WrapError::BadField {
        path: path.to_owned(),
        at: at.to_owned(),
        field,
        expected,
    };
    let command_str = command
        .value
        .as_str()
        .ok_or_else(|| bad("command", "a string"))?;
    let args = match node.member("args") {
        None => None,
        Some(member) => {
            let items = member
                .value
                .as_array()
                .filter(|items| items.iter().all(|i| i.as_str().is_some()))
                .ok_or_else(|| bad("args", "an array of strings"))?;
            Some((member, items))
        }
    };
    Ok(Ok(Entry {
        command,
        command_str,
        args,
    }))
}

fn is_mcpguard(command: &str, this_binary: &str) -> bool {
    command == this_binary
        || Path::new(command)
            .file_name()
            .is_some_and(|n| n == "mcpguard")
}

fn wrap_entry(
    text: &str,
    entry: &Member,
    at: &str,
    opts: &WrapOptions,
    path: &Path,
) -> Result<(Action, Vec<Edit>), WrapError> {
    let e = match inspect(entry, at, path)? {
        Ok(e) => e,
        Err(action) => return Ok((action, Vec::new())),
    };
    let items = e.args.map_or(&[][..], |(_, items)| items);
    let arg_strs: Vec<String> = items
        .iter()
        .filter_map(|i| i.as_str().map(str::to_owned))
        .collect();
    if is_mcpguard(e.command_str, &opts.mcpguard) && arg_strs.first().is_some_and(|a| a == "run") {
        return Ok((Action::AlreadyWrapped, Vec::new()));
    }

    let policy = starter::policy_name(&entry.key);
    let policy_arg = match &opts.policy_dir_arg {
        Some(dir) => format!("{}/{policy}.toml", dir.trim_end_matches('/')),
        None => policy.clone(),
    };
    // The original command moves into args exactly as written (escapes
    // and all), which is what lets unwrap restore it byte for byte.
    let prefix = [
        quote("run"),
        quote("--policy"),
        quote(&policy_arg),
        quote("--"),
        text[e.command.value.span.clone()].to_owned(),
    ];
    let mut edits = Vec::new();
    let mut command_text = quote(&opts.mcpguard);
    match e.args {
        Some((_, [first, ..])) => {
            let ws = json::whitespace_before(text, first.span.start);
            let sep = if ws.contains('\n') {
                format!(",{ws}")
            } else {
                ", ".to_owned()
            };
            let inserted: String = prefix.iter().map(|p| format!("{p}{sep}")).collect();
            edits.push((first.span.start..first.span.start, inserted));
        }
        Some((member, [])) => {
            edits.push((
                member.value.span.clone(),
                format!("[{}]", prefix.join(", ")),
            ));
        }
        None => {
            // A new `args` member goes right after `command`, on its own line
            // if `command` is on its own line.
            let ws = json::whitespace_before(text, e.command.key_span.start);
            let ws = if ws.contains('\n') { ws } else { " " };
            command_text.push_str(&format!(",{ws}\"args\": [{}]", prefix.join(", ")));
        }
    }
    edits.push((e.command.value.span.clone(), command_text));
    let env = entry
        .value
        .get("env")
        .and_then(Node::as_object)
        .map(|vars| {
            vars.iter()
                .map(|v| {
                    (
                        v.key.clone(),
                        v.value.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let action = Action::Wrapped {
        policy,
        command: e.command_str.to_owned(),
        args: arg_strs,
        env,
    };
    Ok((action, edits))
}

fn unwrap_entry(
    text: &str,
    entry: &Member,
    at: &str,
    mcpguard: &str,
    path: &Path,
) -> Result<(Action, Vec<Edit>), WrapError> {
    let e = match inspect(entry, at, path)? {
        Ok(e) => e,
        Err(action) => return Ok((action, Vec::new())),
    };
    let Some((args_member, items)) = e.args else {
        return Ok((Action::NotWrapped, Vec::new()));
    };
    let strs: Vec<&str> = items.iter().filter_map(Node::as_str).collect();
    if !is_mcpguard(e.command_str, mcpguard) || strs.first() != Some(&"run") {
        return Ok((Action::NotWrapped, Vec::new()));
    }
    let Some(dashes) = strs.iter().position(|a| *a == "--") else {
        return Ok((Action::UnknownWrapping, Vec::new()));
    };
    let Some(original) = items.get(dashes + 1) else {
        return Ok((Action::UnknownWrapping, Vec::new()));
    };
    let mut edits = vec![(
        e.command.value.span.clone(),
        text[original.span.clone()].to_owned(),
    )];
    match items.get(dashes + 2) {
        // Cut from the first element to the first original argument: the
        // exact text wrap inserted.
        Some(rest) => edits.push((items[0].span.start..rest.span.start, String::new())),
        // No original arguments: the entry had no `args` (or an empty one)
        // before wrap, so the member goes.
        None => edits.push((member_removal(text, entry, args_member), String::new())),
    }
    Ok((Action::Unwrapped, edits))
}

/// The text to cut to remove `member` from the object `entry`, separator
/// included.
fn member_removal(text: &str, entry: &Member, member: &Member) -> Range<usize> {
    let members = entry.value.as_object().unwrap_or_default();
    let index = members
        .iter()
        .position(|m| m.key_span == member.key_span)
        .unwrap_or(0);
    match (
        index.checked_sub(1).map(|i| &members[i]),
        members.get(index + 1),
    ) {
        // `, "args": [...]` after the previous member: the shape wrap writes.
        (Some(prev), _) => prev.value.span.end..member.value.span.end,
        (None, Some(next)) => member.key_span.start..next.key_span.start,
        (None, None) => {
            let ws = json::whitespace_before(text, member.key_span.start);
            member.key_span.start - ws.len()..member.value.span.end
        }
    }
}

/// `s` as a JSON string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MCPGUARD: &str = "/usr/local/bin/mcpguard";

    fn opts() -> WrapOptions {
        WrapOptions {
            mcpguard: MCPGUARD.to_owned(),
            policy_dir_arg: None,
        }
    }

    fn wrapped(text: &str) -> Rewrite {
        wrap(text, Client::ClaudeDesktop, &opts(), Path::new("t.json"))
            .unwrap_or_else(|e| panic!("wrap {text:?}: {e}"))
    }

    fn unwrapped(text: &str) -> String {
        unwrap(text, Client::ClaudeDesktop, MCPGUARD, Path::new("t.json"))
            .unwrap_or_else(|e| panic!("unwrap {text:?}: {e}"))
            .text
    }

    /// Wraps, checks the result is what `want` says and is valid JSON, and
    /// checks unwrap restores the input.
    fn round_trip(input: &str, want: &str) {
        let out = wrapped(input).text;
        assert_eq!(out, want);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("wrapped text is not JSON: {e}\n{out}"));
        assert_eq!(wrapped(&out).text, out, "wrapping twice changes nothing");
        assert_eq!(unwrapped(&out), input, "unwrap restores the input");
    }

    #[test]
    fn inline_args() {
        round_trip(
            r#"{"mcpServers": {"t": {"command": "uvx", "args": ["mcp-server-time"]}}}"#,
            r#"{"mcpServers": {"t": {"command": "/usr/local/bin/mcpguard", "args": ["run", "--policy", "t", "--", "uvx", "mcp-server-time"]}}}"#,
        );
    }

    #[test]
    fn multi_line_args_keep_their_layout() {
        round_trip(
            "{\"mcpServers\": {\"t\": {\n  \"command\": \"npx\",\n  \"args\": [\n    \"-y\",\n    \"pkg\"\n  ]\n}}}",
            "{\"mcpServers\": {\"t\": {\n  \"command\": \"/usr/local/bin/mcpguard\",\n  \"args\": [\n    \"run\",\n    \"--policy\",\n    \"t\",\n    \"--\",\n    \"npx\",\n    \"-y\",\n    \"pkg\"\n  ]\n}}}",
        );
    }

    #[test]
    fn missing_and_empty_args() {
        round_trip(
            "{\"mcpServers\": {\"t\": {\n\t\"command\": \"/opt/srv\",\n\t\"env\": {}\n}}}",
            "{\"mcpServers\": {\"t\": {\n\t\"command\": \"/usr/local/bin/mcpguard\",\n\t\"args\": [\"run\", \"--policy\", \"t\", \"--\", \"/opt/srv\"],\n\t\"env\": {}\n}}}",
        );
        round_trip(
            r#"{"mcpServers": {"t": {"command": "srv"}}}"#,
            r#"{"mcpServers": {"t": {"command": "/usr/local/bin/mcpguard", "args": ["run", "--policy", "t", "--", "srv"]}}}"#,
        );
        // An empty `args` cannot be told from a missing one once wrapped;
        // unwrap drops it, which means the same to every client.
        let out = wrapped(r#"{"mcpServers": {"t": {"command": "srv", "args": []}}}"#).text;
        assert_eq!(
            out,
            r#"{"mcpServers": {"t": {"command": "/usr/local/bin/mcpguard", "args": ["run", "--policy", "t", "--", "srv"]}}}"#
        );
        assert_eq!(
            unwrapped(&out),
            r#"{"mcpServers": {"t": {"command": "srv"}}}"#
        );
    }

    #[test]
    fn args_before_command_and_escapes_survive() {
        round_trip(
            r#"{"mcpServers": {"t": {"args": ["a\u0041"], "command": "C:\\srv\/x"}}}"#,
            r#"{"mcpServers": {"t": {"args": ["run", "--policy", "t", "--", "C:\\srv\/x", "a\u0041"], "command": "/usr/local/bin/mcpguard"}}}"#,
        );
    }

    #[test]
    fn reports_each_server() {
        let r = wrapped(
            r#"{"mcpServers": {
                "Time Server": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
                "remote": {"url": "https://example.com/mcp"},
                "typed": {"type": "sse", "url": "https://example.com/sse"},
                "odd": {"disabled": true},
                "done": {"command": "/usr/bin/mcpguard", "args": ["run", "--policy", "x", "--", "y"]}
            }}"#,
        );
        let actions: Vec<_> = r.servers.iter().map(|s| &s.action).collect();
        assert_eq!(
            actions,
            [
                &Action::Wrapped {
                    policy: "time-server".into(),
                    command: "uvx".into(),
                    args: vec!["mcp-server-time".into()],
                    env: vec![("TZ".into(), "UTC".into())],
                },
                &Action::Remote,
                &Action::Remote,
                &Action::NoCommand,
                &Action::AlreadyWrapped,
            ]
        );
    }

    #[test]
    fn policy_dir_arg_names_the_file() {
        let o = WrapOptions {
            policy_dir_arg: Some("/srv/policies/".into()),
            ..opts()
        };
        let r = wrap(
            r#"{"mcpServers": {"t": {"command": "srv"}}}"#,
            Client::Cursor,
            &o,
            Path::new("mcp.json"),
        )
        .expect("wrap");
        assert!(
            r.text
                .contains(r#""--policy", "/srv/policies/t.toml", "--""#),
            "{}",
            r.text
        );
    }

    #[test]
    fn unwrap_handles_hand_written_wrapping() {
        let text = r#"{"mcpServers": {"t": {"command": "mcpguard", "args": ["run", "--policy", "p.toml", "--socket", "/s", "--", "srv", "-v"]}}}"#;
        assert_eq!(
            unwrapped(text),
            r#"{"mcpServers": {"t": {"command": "srv", "args": ["-v"]}}}"#
        );
        let odd =
            r#"{"mcpServers": {"t": {"command": "mcpguard", "args": ["run", "--policy", "p"]}}}"#;
        let r = unwrap(odd, Client::ClaudeDesktop, MCPGUARD, Path::new("t.json")).expect("unwrap");
        assert_eq!(r.text, odd);
        assert_eq!(r.servers[0].action, Action::UnknownWrapping);
    }

    #[test]
    fn malformed_entries_are_errors() {
        let cases = [
            (r#"{"mcpServers": {"t": "npx x"}}"#, "not an object"),
            (r#"{"mcpServers": []}"#, "not an object"),
            (r#"{"mcpServers": {"t": {"command": 1}}}"#, "command"),
            (
                r#"{"mcpServers": {"t": {"command": "x", "args": "y"}}}"#,
                "args",
            ),
            (
                r#"{"mcpServers": {"t": {"command": "x", "args": [1]}}}"#,
                "args",
            ),
        ];
        for (text, want) in cases {
            let e = wrap(text, Client::ClaudeDesktop, &opts(), Path::new("t.json"))
                .expect_err(text)
                .to_string();
            assert!(e.contains(want) && e.contains("t.json"), "{text}: {e}");
        }
        let e = wrap(
            "{\n  \"mcpServers\": {,\n}",
            Client::ClaudeDesktop,
            &opts(),
            Path::new("t.json"),
        )
        .expect_err("bad json")
        .to_string();
        assert!(e.starts_with("t.json:2:18: "), "{e}");
    }

    #[test]
    fn quote_matches_serde_json() {
        for s in ["plain", "a\"b\\c", "tab\tnl\n\u{1}", "é/日本"] {
            let want = serde_json::to_string(s).expect("serde_json");
            assert_eq!(quote(s), want);
        }
    }
}
