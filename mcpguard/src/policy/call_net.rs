//! Per-call network rules: `[tools.<name>] network = [...]`, destinations
//! a server may reach only while a `tools/call` to that tool is in flight
//! (the daemon opens and closes them, `daemon::call_net`). Same grammar as
//! `[network] allow`: addresses (`10.0.0.0/8:443`) and names
//! (`example.com:80`, `*.example.com:443`, `*:443`). Tool names are exact:
//! a rule that opens the network must say which tool it opens it for.
//!
//! `[tools]` holds its own keys and a table per tool. serde cannot keep
//! spans through `#[serde(flatten)]`, so the first pass only collects the
//! names of the keys that are not `[tools]`' own (`Rest`), and `check`
//! reads those tables again from the text with their spans, so every error
//! points at its line.

use std::{collections::BTreeMap, fmt};

use serde::{de, Deserialize, Deserializer};
use toml::Spanned;

use super::{
    net::{self, AllowRule},
    Checker, HostRule, Location, NetRule, PolicyError, Problem,
};

/// Longest tool name a per-call table may carry (as `[tools]` globs).
const MAX_TOOL_NAME: usize = 128;

/// One tool's per-call rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallRules {
    /// By address.
    pub allow: Vec<NetRule>,
    /// By name: answered by the server's resolver during the call.
    pub hosts: Vec<HostRule>,
}

impl CallRules {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.hosts.is_empty()
    }

    /// The rules as written, for records.
    pub fn texts(&self) -> Vec<String> {
        let addrs = self.allow.iter().map(|r| r.text.clone());
        addrs
            .chain(self.hosts.iter().map(|h| h.text.clone()))
            .collect()
    }

    /// Adds `other`'s rules that this set does not hold yet.
    fn extend(&mut self, other: &CallRules) {
        for rule in &other.allow {
            if !self.allow.contains(rule) {
                self.allow.push(rule.clone());
            }
        }
        for host in &other.hosts {
            if !self.hosts.contains(host) {
                self.hosts.push(host.clone());
            }
        }
    }
}

/// Every tool's per-call rules, by exact tool name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallNet {
    tools: BTreeMap<String, CallRules>,
}

impl CallNet {
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// `tool`'s rules, if it has any.
    pub fn get(&self, tool: &str) -> Option<&CallRules> {
        self.tools.get(tool)
    }

    /// The tools that have rules.
    pub fn tools(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// What is open while calls to `tools` are in flight: the union of
    /// their rules, each rule once.
    pub fn union<'a>(&self, tools: impl IntoIterator<Item = &'a str>) -> CallRules {
        let mut out = CallRules::default();
        for rules in tools.into_iter().filter_map(|t| self.get(t)) {
            out.extend(rules);
        }
        out
    }
}

/// The keys of `[tools]` that are none of its own, from the first pass:
/// tool tables, or typos.
pub(super) type Rest = BTreeMap<String, de::IgnoredAny>;

/// The second pass: only `[tools]`, with spans.
#[derive(Deserialize)]
struct RawDoc {
    #[serde(default)]
    tools: BTreeMap<Spanned<String>, Entry>,
}

/// One key of `[tools]`: a table (a tool's rules), or anything else (one
/// of `[tools]`' own keys, which the first pass checked).
enum Entry {
    Rules(RawToolRules),
    Other,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToolRules {
    #[serde(default)]
    network: Vec<Spanned<String>>,
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> de::Visitor<'de> for EntryVisitor {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of [tools]")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
        // The table's own deserializer, so its values keep their spans.
        RawToolRules::deserialize(de::value::MapAccessDeserializer::new(map)).map(Entry::Rules)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Entry, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Entry::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Entry, E> {
        Ok(Entry::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Entry, E> {
        Ok(Entry::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Entry, E> {
        Ok(Entry::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Entry, E> {
        Ok(Entry::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Entry, E> {
        Ok(Entry::Other)
    }
}

/// The per-call tables among `rest`, validated; `startup` is
/// `[network] allow`'s address rules, which every call's rules are folded
/// with in the kernel's map.
pub(super) fn check(
    c: &Checker<'_>,
    rest: &Rest,
    startup: &[NetRule],
) -> Result<CallNet, PolicyError> {
    if rest.is_empty() {
        return Ok(CallNet::default());
    }
    let doc: RawDoc =
        toml::from_str(c.text).map_err(|e| super::syntax_error(e, c.text, c.source))?;
    let mut tools = BTreeMap::new();
    for (name, entry) in doc.tools {
        if !rest.contains_key(name.get_ref()) {
            continue;
        }
        let at = Location::at(c.source, c.text, name.span().start);
        let Entry::Rules(raw) = entry else {
            return Err(PolicyError::UnknownToolsKey {
                at,
                key: name.into_inner(),
            });
        };
        let tool = name.into_inner();
        if let Err(problem) = check_tool_name(&tool) {
            return Err(PolicyError::ToolNetwork {
                at,
                value: tool.as_str().into(),
                tool: tool.into(),
                problem,
            });
        }
        let rules = tool_rules(c, &tool, &raw.network, startup)?;
        if !rules.is_empty() {
            tools.insert(tool, rules);
        }
    }
    Ok(CallNet { tools })
}

/// One tool's `network` list, split into address and host rules; its
/// address rules must fold with the startup ones into the kernel's entries.
fn tool_rules(
    c: &Checker<'_>,
    tool: &str,
    items: &[Spanned<String>],
    startup: &[NetRule],
) -> Result<CallRules, PolicyError> {
    let located = |item: &Spanned<String>, problem| PolicyError::ToolNetwork {
        at: Location::at(c.source, c.text, item.span().start),
        tool: tool.into(),
        value: item.get_ref().as_str().into(),
        problem,
    };
    let mut rules = CallRules::default();
    for item in items {
        match net::parse_allow(item.get_ref()).map_err(|p| located(item, p))? {
            AllowRule::Addr(r) => rules.allow.push(r),
            AllowRule::Host(h) => rules.hosts.push(h),
        }
    }
    if rules.allow.is_empty() {
        return Ok(rules);
    }
    let mut all = startup.to_vec();
    all.extend(rules.allow.iter().cloned());
    if let Err(PolicyError::TooManyPortRanges {
        rule,
        prefix,
        count,
        max,
    }) = net::compile_allow(&all, 0)
    {
        // The rule named is the first of its prefix: when that is a
        // startup one, the tool's last rule is the one that tipped it over.
        if let Some(item) = items.iter().find(|i| *i.get_ref() == rule).or(items.last()) {
            return Err(located(
                item,
                Problem::TooManyPortRanges { prefix, count, max },
            ));
        }
    }
    Ok(rules)
}

/// Per-call rules name one tool exactly.
fn check_tool_name(name: &str) -> Result<(), Problem> {
    let bad = name.is_empty()
        || name.chars().count() > MAX_TOOL_NAME
        || name.chars().any(|c| c.is_control() || c == '*' || c == '?');
    if bad {
        Err(Problem::ToolName)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
