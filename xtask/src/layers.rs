//! `cargo xtask layers`: the import graph of `mcpguard/src`, checked for
//! cycles at every level of the module tree.
//!
//! Each reference (`crate::a::b`, `super::c`, `self::d`, in `use` lines
//! and inline paths) from module `X` to module `Y` is an arrow between the
//! two children of their nearest common ancestor that hold `X` and `Y`:
//! `daemon::session` using `crate::audit::query::Filter` is the arrow
//! `daemon → audit` among the crate's top-level modules, and
//! `daemon::session` using `super::proto::Request` is `session → proto`
//! inside `daemon`. A folder's own `mod.rs` is the folder, so its arrows to
//! its children never count. Test-only code (`#[cfg(test)]` items and the
//! files they declare) is left out: tests may reach anywhere.
//!
//! The check reads source text, not the compiler's resolution; it knows the
//! path forms this tree uses, and a unit test pins each of them.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{Context, Result};

/// A module's path inside the crate: `["daemon", "session"]`.
type ModPath = Vec<String>;

/// Arrows among the children of one module: `parent → {from → {to}}`.
type Levels = BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>>;

/// Checks `mcpguard/src`; prints the top-level order and fails on a cycle.
pub fn run(root: &Path) -> Result<()> {
    let src = root.join("mcpguard/src");
    let modules = read_tree(&src)?;
    let levels = arrows(&modules);
    let cycles: Vec<String> = levels
        .iter()
        .flat_map(|(parent, graph)| {
            find_cycles(graph).into_iter().map(move |cycle| {
                let at = if parent.is_empty() {
                    "crate".to_string()
                } else {
                    parent.join("::")
                };
                format!("in {at}: {}", cycle.join(" -> "))
            })
        })
        .collect();
    if let Some(top) = levels.get(&ModPath::new()) {
        println!("layers (lowest first): {}", order(top).join(" < "));
    }
    anyhow::ensure!(
        cycles.is_empty(),
        "import cycles in mcpguard/src (each module must import only from below it):\n  {}",
        cycles.join("\n  ")
    );
    Ok(())
}

/// Every non-test module of the tree with its code (test items removed).
fn read_tree(src: &Path) -> Result<BTreeMap<ModPath, String>> {
    let mut modules = BTreeMap::new();
    let mut test_files = BTreeSet::new();
    visit(src, src, &mut modules, &mut test_files)?;
    modules.retain(|path, _| !test_files.iter().any(|t| path.starts_with(t)));
    Ok(modules)
}

fn visit(
    src: &Path,
    dir: &Path,
    modules: &mut BTreeMap<ModPath, String>,
    test_files: &mut BTreeSet<ModPath>,
) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            visit(src, &path, modules, test_files)?;
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = module_of(src, &path);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let (code, tests) = strip_tests(&strip_comments_and_strings(&text));
        test_files.extend(
            tests
                .into_iter()
                .map(|t| [module.clone(), vec![t]].concat()),
        );
        modules.insert(module, code);
    }
    Ok(())
}

/// `daemon/session.rs` → `daemon::session`; `daemon/mod.rs` → `daemon`;
/// `lib.rs` and `main.rs` → the crate root.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("file is under src");
    let mut parts: ModPath = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Code with comments blanked and string/char literals emptied, so paths in
/// docs or messages are not read as imports.
fn strip_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1).copied()) {
            (b'/', Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                out.extend(text[i..end].chars().filter(|&c| c == '\n'));
                i = end;
            }
            (b'r', Some(b'"' | b'#')) if !prev_is_ident(b, i) => {
                i = skip_raw_string(b, i, &mut out)
            }
            (b'"', _) => i = skip_string(b, i, &mut out),
            (b'\'', _) => i = skip_char(b, i, &mut out),
            _ => {
                let ch = text[i..].chars().next().expect("in bounds");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn skip_string(b: &[u8], mut i: usize, out: &mut String) -> usize {
    i += 1;
    while i < b.len() && b[i] != b'"' {
        if b[i] == b'\n' {
            out.push('\n');
        }
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    out.push_str("\"\"");
    i + 1
}

fn skip_raw_string(b: &[u8], mut i: usize, out: &mut String) -> usize {
    i += 1;
    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
    if b.get(i + hashes) != Some(&b'"') {
        out.push('r');
        return i;
    }
    i += hashes + 1;
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    while i < b.len() && !b[i..].starts_with(&close) {
        if b[i] == b'\n' {
            out.push('\n');
        }
        i += 1;
    }
    out.push_str("\"\"");
    i + close.len()
}

/// A char literal, or a lifetime (left as it is).
fn skip_char(b: &[u8], i: usize, out: &mut String) -> usize {
    let len = if b.get(i + 1) == Some(&b'\\') {
        b[i + 2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
    } else {
        // One UTF-8 char then a quote; otherwise a lifetime.
        let ch_len = std::str::from_utf8(&b[i + 1..(i + 5).min(b.len())])
            .or_else(|e| std::str::from_utf8(&b[i + 1..i + 1 + e.valid_up_to()]))
            .ok()
            .and_then(|s| s.chars().next())
            .map_or(1, char::len_utf8);
        (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(ch_len + 2)
    };
    match len {
        Some(n) => {
            out.push_str("' '");
            i + n
        }
        None => {
            out.push('\'');
            i + 1
        }
    }
}

/// Removes items under `#[cfg(test)]`; returns the code and the names of
/// test-only child modules declared as files (`#[cfg(test)] mod tests;`).
fn strip_tests(code: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(code.len());
    let mut files = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let end = item_end(item);
        let words: Vec<&str> = item[..end].split_whitespace().collect();
        if let ["mod", name] | ["pub", "mod", name] = words.as_slice() {
            files.push(name.trim_end_matches(';').to_string());
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, files)
}

/// The length of the item at the start of `s`: up to its `;` or the brace
/// that closes its body, whichever the item has.
fn item_end(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// The arrows at every level of the tree.
fn arrows(modules: &BTreeMap<ModPath, String>) -> Levels {
    let known: BTreeSet<&ModPath> = modules.keys().collect();
    let mut levels = Levels::new();
    for (from, code) in modules {
        for path in references(code) {
            let Some(to) = resolve(from, &path, &known) else {
                continue;
            };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common < from.len() && common < to.len() {
                levels
                    .entry(from[..common].to_vec())
                    .or_default()
                    .entry(from[common].clone())
                    .or_default()
                    .insert(to[common].clone());
            }
        }
    }
    levels
}

/// The module a reference lands in: the longest known module that prefixes
/// its absolute path.
fn resolve(from: &ModPath, path: &[String], known: &BTreeSet<&ModPath>) -> Option<ModPath> {
    let mut abs = match path.first().map(String::as_str) {
        Some("crate") => ModPath::new(),
        Some("self") => from.clone(),
        Some("super") => from.clone(),
        _ => return None,
    };
    let mut segments = path.iter().skip(1).peekable();
    if path[0] == "super" {
        abs.pop()?;
        while segments.peek().is_some_and(|s| *s == "super") {
            segments.next();
            abs.pop()?;
        }
    }
    abs.extend(segments.cloned());
    (0..=abs.len())
        .rev()
        .map(|n| abs[..n].to_vec())
        .find(|prefix| known.contains(prefix))
}

/// Every path that starts at `crate`, `super` or `self`, with `use`
/// groups (`crate::{a::b, c}`) expanded.
fn references(code: &str) -> Vec<Vec<String>> {
    let tokens = tokenize(code);
    let mut found = Vec::new();
    for i in 0..tokens.len() {
        let t = tokens[i].as_str();
        let starts =
            matches!(t, "crate" | "super" | "self") && tokens.get(i + 1).is_some_and(|n| n == "::");
        let continues = i > 0 && tokens[i - 1] == "::";
        if starts && !continues {
            expand(&tokens, i, &mut vec![], &mut found);
        }
    }
    found
}

/// Identifiers, `::`, and the punctuation a `use` group needs.
fn tokenize(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if !(d.is_alphanumeric() || d == '_') {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            tokens.push(code[i..end].to_string());
        } else if c == ':' && chars.peek().is_some_and(|&(_, d)| d == ':') {
            chars.next();
            tokens.push("::".to_string());
        } else if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    tokens
}

/// Reads one path from `tokens[i]`, following `{...}` groups; returns the
/// index after it.
fn expand(
    tokens: &[String],
    mut i: usize,
    prefix: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let base = prefix.len();
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                loop {
                    i = expand(tokens, i, prefix, out);
                    match tokens.get(i).map(String::as_str) {
                        Some(",") => i += 1,
                        _ => break,
                    }
                    if tokens.get(i).is_some_and(|t| t == "}") {
                        break;
                    }
                }
                i += 1; // the closing brace
                break;
            }
            Some(word)
                if word
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_') =>
            {
                prefix.push(word.to_string());
                i += 1;
                if tokens.get(i).is_some_and(|t| t == "::") {
                    i += 1;
                    continue;
                }
                out.push(prefix.clone());
                break;
            }
            // `*`, or the end of a path inside a group.
            _ => {
                if !prefix.is_empty() {
                    out.push(prefix.clone());
                }
                break;
            }
        }
    }
    prefix.truncate(base);
    i
}

/// Each cycle once, as a closed walk of module names.
fn find_cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut cycles = Vec::new();
    let mut seen: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![start.clone()];
        walk(graph, start, &mut stack, &mut seen, &mut cycles);
    }
    cycles
}

fn walk(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    stack: &mut Vec<String>,
    seen: &mut BTreeSet<BTreeSet<String>>,
    cycles: &mut Vec<Vec<String>>,
) {
    let last = stack.last().expect("stack starts non-empty").clone();
    for next in graph.get(&last).into_iter().flatten() {
        if next == start {
            let members: BTreeSet<String> = stack.iter().cloned().collect();
            if seen.insert(members) {
                cycles.push([stack.clone(), vec![start.to_string()]].concat());
            }
        } else if next.as_str() > start && !stack.contains(next) {
            stack.push(next.clone());
            walk(graph, start, stack, seen, cycles);
            stack.pop();
        }
    }
}

/// The modules of one level, lowest first (a module after everything it
/// imports); with no cycle every module is placed.
fn order(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut nodes: BTreeSet<&String> = graph.keys().chain(graph.values().flatten()).collect();
    let mut placed: Vec<String> = Vec::new();
    while !nodes.is_empty() {
        let ready: Vec<&String> = nodes
            .iter()
            .copied()
            .filter(|n| {
                graph
                    .get(*n)
                    .is_none_or(|deps| deps.iter().all(|d| d == *n || placed.contains(d)))
            })
            .collect();
        if ready.is_empty() {
            placed.extend(nodes.iter().map(|n| format!("{n}(cycle)")));
            break;
        }
        for n in ready {
            nodes.remove(n);
            placed.push(n.clone());
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Levels {
        let modules = files
            .iter()
            .map(|(path, text)| {
                let module: ModPath = path
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                let (code, _) = strip_tests(&strip_comments_and_strings(text));
                (module, code)
            })
            .collect();
        arrows(&modules)
    }

    fn edges(levels: &Levels, at: &str) -> Vec<String> {
        let key: ModPath = at
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        levels
            .get(&key)
            .into_iter()
            .flatten()
            .flat_map(|(from, tos)| tos.iter().map(move |to| format!("{from}->{to}")))
            .collect()
    }

    #[test]
    fn each_path_form_is_an_arrow_at_the_common_ancestor() {
        let levels = graph(&[
            ("", ""),
            ("audit", ""),
            ("audit::query", ""),
            ("kernel", ""),
            ("daemon", "use session::serve;"),
            ("daemon::proto", ""),
            (
                "daemon::status",
                "pub fn f() -> super::proto::Hello { todo!() }",
            ),
            (
                "daemon::session",
                "use super::{proto::{Request, Response}, status};\n\
                 use crate::{audit::query::Filter, kernel};\n\
                 fn g() { crate::audit::format(); self::h(); }",
            ),
        ]);
        assert_eq!(edges(&levels, ""), ["daemon->audit", "daemon->kernel"]);
        assert_eq!(
            edges(&levels, "daemon"),
            ["session->proto", "session->status", "status->proto"]
        );
    }

    #[test]
    fn comments_strings_and_tests_are_not_imports() {
        let levels = graph(&[
            ("", ""),
            ("a", "// crate::b::x\n/* crate::b */ fn f() { let s = \"crate::b::y\"; let r = r#\"crate::b\"#; let c = '\"'; }\n\
                   #[cfg(test)]\nmod tests { use crate::b::z; }\n"),
            ("b", "fn f<'a>(x: &'a str) -> &'a str { crate::a::g(); x }"),
        ]);
        assert_eq!(edges(&levels, ""), ["b->a"]);
    }

    #[test]
    fn a_cycle_is_found_once_with_its_path() {
        let levels = graph(&[
            ("", ""),
            ("a", "use crate::b::x;"),
            ("b", "use crate::c::y;"),
            ("c", "use crate::a::z;"),
            ("d", "use crate::a::z;"),
        ]);
        let top = &levels[&ModPath::new()];
        assert_eq!(find_cycles(top), [vec!["a", "b", "c", "a"]]);
        assert_eq!(
            order(&BTreeMap::from([(
                "d".to_string(),
                BTreeSet::from(["a".to_string()])
            )])),
            ["a", "d"]
        );
    }
}
